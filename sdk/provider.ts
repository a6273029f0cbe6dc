import * as pulumi from "@pulumi/pulumi";

/**
 * The dynamic provider object for one resource kind.
 *
 * The engine serializes these methods into the deployment. Each one requires
 * the real implementation from node_modules when it runs, so the serialized
 * closure stays tiny, captures no live object (SSH client, socket), and every
 * resource of a deployment shares the one SSH pool in that module.
 */
export function kindProvider(kind: string): pulumi.dynamic.ResourceProvider {
  return {
    check: (olds, news) => require("pulumi-kvmnet/provider").kinds[kind].check(olds, news),
    diff: (id, olds, news) => require("pulumi-kvmnet/provider").kinds[kind].diff(id, olds, news),
    create: (inputs) => require("pulumi-kvmnet/provider").kinds[kind].create(inputs),
    read: (id, props) => require("pulumi-kvmnet/provider").kinds[kind].read(id, props),
    update: (id, olds, news) => require("pulumi-kvmnet/provider").kinds[kind].update(id, olds, news),
    delete: (id, props) => require("pulumi-kvmnet/provider").kinds[kind].delete(id, props),
  };
}

/** Options every kvmnet resource gets: the connection (credentials) is secret in outputs. */
export function withSecretConnection(opts: pulumi.CustomResourceOptions | undefined): pulumi.CustomResourceOptions {
  return { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connection"] };
}
