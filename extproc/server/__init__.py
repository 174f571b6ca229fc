"""The gRPC side: servicer (dispatch only) and server lifecycle."""

from extproc.server.grpc_server import start_grpc_server

__all__ = ["start_grpc_server"]
