"""An empty Guardrail servicer: the anchor for "how close to a bare gRPC round trip".

    python bench/empty_server.py        # prints "serving 127.0.0.1:PORT", then serves

Same grpc.aio server, same messages, no work: InspectPrompt answers ALLOW with the text
it got. The benchmark suite measures its p50 in the same run as the sidecar's.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def main() -> None:
    import grpc

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb
    from sidecar._proto.guardrail.v1 import guardrail_pb2_grpc as pb_grpc

    class Empty(pb_grpc.GuardrailServicer):
        async def InspectPrompt(self, request: Any, context: Any) -> Any:
            return pb.InspectResponse(decision=pb.ALLOW, text=request.text)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GuardrailServicer_to_server(Empty(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
