// pulumi-language-nodejs: a small Node.js language host for the Pulumi engine, written for
// pulumi-kvmnet because the upstream host's Go module is not published (see
// scripts/install-pulumi.sh, which builds it from this directory).
// It serves the LanguageRuntime gRPC service: Run starts `node @pulumi/pulumi/cmd/run` for the
// program, the way the upstream host does.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

func main() {
	engineAddress, tracing := parseArgs(os.Args[1:])

	host := &nodeHost{engineAddress: engineAddress, tracing: tracing}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: []grpc.ServerOption{grpc.MaxRecvMsgSize(400 * 1024 * 1024)},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: could not start the gRPC server: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: gRPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

// parseArgs reads the command line the engine starts a language host with: flags, then the
// engine's address. Only -tracing (with its value as the next argument or after "=") and the
// address matter here; -root's value is skipped, and other flags (--logtostderr, -v=N, ...) are
// ignored.
func parseArgs(args []string) (engineAddress, tracing string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-tracing" || a == "--tracing":
			if i+1 < len(args) {
				tracing = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-tracing=") || strings.HasPrefix(a, "--tracing="):
			tracing = a[strings.Index(a, "=")+1:]
		case a == "-root" || a == "--root":
			i++
		case strings.HasPrefix(a, "-"):
			// --logtostderr, -v=N, ...: nothing to do.
		default:
			engineAddress = a
		}
	}
	return engineAddress, tracing
}

type nodeHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
}

func (h *nodeHost) GetPluginInfo(ctx context.Context, req *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}
