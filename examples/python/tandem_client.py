#!/usr/bin/python3
"""A small client for Tandem's gRPC API, for orchestration services to copy.

It needs only Debian's python3-grpcio and python3-protobuf, and the message
modules that protoc makes from proto/ (CMake writes them to build/proto/python):

    protoc --python_out=OUT -Iproto tandem/v1/inference.proto tandem/v1/cluster.proto
    (and grpc/health/v1/health.proto, moved to OUT/grpc_health/v1/ so that it does
    not shadow the grpc package)

The methods are called through grpc's generic channel.unary_stream and
channel.unary_unary, so no grpc_tools plugin is needed.

    PYTHONPATH=build/proto/python /usr/bin/python3 examples/python/tandem_client.py \\
        --server 127.0.0.1:50051 generate --prompt "Once upon a time" --max-tokens 32
    ... status | health | shutdown
"""
import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2  # proto/grpc/health/v1/health.proto, renamed by CMake
from tandem.v1 import cluster_pb2, inference_pb2

INFERENCE = "/tandem.v1.InferenceService/"
CLUSTER = "/tandem.v1.ClusterService/"


class TandemClient:
    def __init__(self, server, token=None, ca_file=None, timeout=600.0):
        if ca_file:
            with open(ca_file, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self.channel = grpc.secure_channel(server, creds)
        else:
            self.channel = grpc.insecure_channel(server)
        # Every call but health carries the bearer token when the server wants one.
        self.metadata = [("authorization", "Bearer " + token)] if token else None
        self.timeout = timeout

    def _unary(self, service, method, request, response_type, timeout=30.0):
        call = self.channel.unary_unary(
            service + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString)
        return call(request, timeout=timeout, metadata=self.metadata)

    def generate(self, request):
        """Yields GenerateResponse messages: Delta ones, then one Finished."""
        call = self.channel.unary_stream(
            INFERENCE + "Generate",
            request_serializer=inference_pb2.GenerateRequest.SerializeToString,
            response_deserializer=inference_pb2.GenerateResponse.FromString)
        return call(request, timeout=self.timeout, metadata=self.metadata)

    def model_info(self):
        return self._unary(INFERENCE, "GetModelInfo", inference_pb2.GetModelInfoRequest(),
                           inference_pb2.ModelInfo)

    def status(self):
        return self._unary(CLUSTER, "GetStatus", cluster_pb2.GetStatusRequest(),
                           cluster_pb2.ClusterStatus)

    def shutdown(self, drain_timeout_seconds=0.0):
        return self._unary(CLUSTER, "Shutdown",
                           cluster_pb2.ShutdownRequest(drain_timeout_seconds=drain_timeout_seconds),
                           cluster_pb2.ShutdownResponse)

    def health(self, service=""):
        """grpc.health.v1: "SERVING" or "NOT_SERVING". Open without the token."""
        call = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        response = call(health_pb2.HealthCheckRequest(service=service), timeout=10.0)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:50051")
    p.add_argument("--auth-token-file")
    p.add_argument("--tls-ca", help="use TLS, trusting this CA (PEM)")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[])
    g.add_argument("--ignore-eos", action="store_true")
    g.add_argument("--print-token-ids", action="store_true")
    sub.add_parser("status")
    sub.add_parser("health")
    sub.add_parser("shutdown")
    args = p.parse_args()

    token = None
    if args.auth_token_file:
        with open(args.auth_token_file) as f:
            token = f.read().strip()
    client = TandemClient(args.server, token=token, ca_file=args.tls_ca)
    try:
        if args.command == "generate":
            request = inference_pb2.GenerateRequest(
                text=args.prompt, max_tokens=args.max_tokens, stop=args.stop,
                ignore_eos=args.ignore_eos)
            request.sampling.temperature = args.temperature
            if args.seed is not None:
                request.sampling.seed = args.seed
            ids = []
            for message in client.generate(request):
                if message.HasField("delta"):
                    sys.stdout.write(message.delta.text)
                    sys.stdout.flush()
                    ids.extend(message.delta.token_ids)
                else:
                    done = message.finished
                    reason = inference_pb2.FinishReason.Name(done.reason)
                    print(file=sys.stdout)
                    if args.print_token_ids:
                        print(" ".join(str(i) for i in ids))
                    print(f"finish: {reason}; {done.usage.prompt_tokens} prompt tokens, "
                          f"{done.usage.completion_tokens} generated; seed {done.seed}",
                          file=sys.stderr)
        elif args.command == "status":
            print(client.status())
        elif args.command == "health":
            print(client.health())
        elif args.command == "shutdown":
            client.shutdown()
    except grpc.RpcError as e:
        print(f"tandem_client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
