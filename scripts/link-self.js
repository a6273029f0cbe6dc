#!/usr/bin/env node
// Make `require("pulumi-kvmnet/provider")` resolve inside this checkout.
//
// The engine serializes each resource's provider as a closure that requires
// the real implementation from node_modules when it runs in the
// dynamic-provider process (cwd = the program's directory). For the examples
// in this repo there is no installed copy, so link node_modules/pulumi-kvmnet
// to the package root — what `npm link` would do, without touching the
// global prefix.
const fs = require("fs");
const path = require("path");
const root = path.resolve(__dirname, "..");
const link = path.join(root, "node_modules", "pulumi-kvmnet");
try {
  if (fs.readlinkSync(link) === "..") process.exit(0);
  fs.unlinkSync(link);
} catch {
  /* no link yet */
}
fs.mkdirSync(path.dirname(link), { recursive: true });
fs.symlinkSync("..", link, "dir");
