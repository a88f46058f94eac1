"""Streams and conversations (issue 6): what streaming and chat history cost.

    .venv/bin/python bench/conversations.py [--texts 12] [--conversations 6]

Against anchors measured in the same run, on the shipped policies (audit on):

1. Streamed completions. Each ~2 KB completion is sent in chunks of 16 and 64
   characters by a lockstep client (it sends the next chunk only once the previous one
   is acknowledged: every chunk is inspected as it comes, the costliest pacing for the
   server; a faster model gets its chunks coalesced). Reported: per-chunk latency
   (p50/p99, all chunks and the chunks that released text) and the CPU the sidecar
   spent per completion, streamed vs one buffered InspectCompletion of the same text
   (target <= 1.5x), split into the workers' share (the inspection work the windowing
   controls) and the whole process tree (gRPC message handling included).
2. Chat history. Conversations of 20 turns, the whole history re-sent each turn:
   the latency of turn 20 (39 messages, 2 of them new) vs turn 1 (1 message), target
   <= 1.5x; and vs a fresh request holding only turn 20's two new messages (what the
   history itself costs). With the message cache (shipped) and without it
   (GUARDRAIL_MESSAGE_CACHE_ENTRIES=0).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NAMES = ["Jane Doe", "John Smith", "Maria Garcia", "Wei Chen", "Amara Okafor", "Lars Berg"]
FILLER = ["The order was shipped on time and the customer confirmed the delivery.",
          "We reviewed the account settings and updated the notification preferences.",
          "Please keep the reference number for any follow-up questions you may have.",
          "The team will look into the billing discrepancy and report back tomorrow.",
          "Our records show two open tickets, both of which are now being handled."]


def clock_ticks(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system) of the server process and of its workers."""
    hz = os.sysconf("SC_CLK_TCK")
    server, workers = 0.0, 0.0
    for index, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / hz
        if index == 0:
            server += seconds
        else:
            workers += seconds
    return server, workers


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            found.extend(int(c) for c in children)
            queue.extend(int(c) for c in children)
    return found


def completion(rng: random.Random, chars: int = 2000) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        name = rng.choice(NAMES)
        parts.append(rng.choice(FILLER))
        parts.append(rng.choice([
            f"{name} can be reached at {name.split()[0].lower()}@example.com.",
            f"Call {name} on 212-555-{rng.randint(1000, 9999)} after lunch.",
            f"The card 4111 1111 1111 1111 belongs to {name}.",
            f"{name} asked us to update the address on file."]))
    return " ".join(parts)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lockstep_stream(stub: Any, text: str, size: int) -> tuple[list[float], list[float], str]:
    """Send chunk by chunk, each after the previous one's verdict; (latencies of all
    chunks, of the chunks whose verdict released text, the text shown)."""
    import queue

    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

    outbox: queue.Queue[Any] = queue.Queue()

    def source() -> Any:
        while (chunk := outbox.get()) is not None:
            yield chunk

    calls = stub.InspectCompletionStream(source(), timeout=120)
    outbox.put(pb.CompletionChunk(request=pb.InspectRequest(request_id="bench-stream")))
    next(calls)
    latencies, releasing, shown = [], [], []
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    for number, piece in enumerate(pieces):
        started = time.perf_counter()
        outbox.put(pb.CompletionChunk(text=piece, end=number == len(pieces) - 1))
        verdict = next(calls)
        elapsed = (time.perf_counter() - started) * 1000
        latencies.append(elapsed)
        if verdict.text:
            releasing.append(elapsed)
        shown.append(verdict.text)
    outbox.put(None)
    for verdict in calls:
        shown.append(verdict.text)
    return latencies, releasing, "".join(shown)


def bench_streams(stub: Any, pids: list[int], texts: list[str]) -> list[tuple[str, str]]:
    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

    rows = []
    for size in (16, 64):
        cpu: dict[str, list[float]] = {"buffered": [], "streamed": []}
        workers_cpu: dict[str, list[float]] = {"buffered": [], "streamed": []}
        wall: dict[str, list[float]] = {"buffered": [], "streamed": []}
        all_chunks: list[float] = []
        releasing: list[float] = []
        for text in texts:  # interleaved, so both sides see the same machine
            for side in ("buffered", "streamed"):
                before = clock_ticks(pids)
                started = time.perf_counter()
                if side == "buffered":
                    expected = stub.InspectCompletion(pb.InspectRequest(text=text),
                                                      timeout=60).text
                else:
                    chunk_times, released, shown = lockstep_stream(stub, text, size)
                    all_chunks += chunk_times
                    releasing += released
                    assert shown == expected, "streamed output differs from buffered"
                wall[side].append(time.perf_counter() - started)
                after = clock_ticks(pids)
                cpu[side].append(sum(after) - sum(before))
                workers_cpu[side].append(after[1] - before[1])
        total = sum(cpu["streamed"]) / max(sum(cpu["buffered"]), 1e-9)
        work = sum(workers_cpu["streamed"]) / max(sum(workers_cpu["buffered"]), 1e-9)
        rows += [
            (f"stream {size}-char chunks: per-chunk p50 / p99 (ms)",
             f"{percentile(all_chunks, 0.5):.2f} / {percentile(all_chunks, 0.99):.2f}"),
            (f"stream {size}-char chunks: releasing chunks p50 / p99 (ms)",
             f"{percentile(releasing, 0.5):.2f} / {percentile(releasing, 0.99):.2f}"),
            (f"stream {size}-char chunks: worker CPU vs buffered (target <= 1.5x)",
             f"{work:.2f}x"),
            (f"stream {size}-char chunks: all sidecar CPU vs buffered", f"{total:.2f}x"),
            (f"stream {size}-char chunks: wall time, lockstep vs buffered",
             f"{statistics.median(wall['streamed']) * 1000:.0f} ms vs "
             f"{statistics.median(wall['buffered']) * 1000:.0f} ms"),
        ]
    return rows


def bench_chat(stub: Any, rng: random.Random, conversations: int) -> dict[str, float]:
    """Median latency (ms) of turn 1, of turn 20, and of a fresh request holding only
    turn 20's two new messages (what the history itself adds is turn 20 minus that)."""
    from sidecar._proto.guardrail.v1 import guardrail_pb2 as pb

    def turn_messages(number: int, turn: int) -> list[Any]:
        name = rng.choice(NAMES)
        user = pb.Message(role="user", content=(
            f"Turn {number}.{turn}: I am {name}, mail {name.split()[0].lower()}"
            f"{turn}@example.com. {rng.choice(FILLER)}"))
        if not turn:
            return [user]
        return [pb.Message(role="assistant", content=(
            f"Reply {number}.{turn}: {rng.choice(FILLER)} {rng.choice(FILLER)}")), user]

    def timed(messages: list[Any], conversation: str) -> float:
        started = time.perf_counter()
        stub.InspectPrompt(pb.InspectRequest(messages=pb.Messages(messages=messages),
                                             conversation_id=conversation), timeout=60)
        return (time.perf_counter() - started) * 1000

    times: dict[str, list[float]] = {"turn 1": [], "turn 20": [], "new only": []}
    for number in range(conversations):
        history: list[Any] = []
        for turn in range(20):
            history += turn_messages(number, turn)
            elapsed = timed(history, f"c{number}")
            if turn in (0, 19):
                times[f"turn {turn + 1}"].append(elapsed)
        times["new only"].append(timed(turn_messages(number + 1000, 19), f"f{number}"))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=12)
    parser.add_argument("--conversations", type=int, default=6)
    args = parser.parse_args()

    from sidecar_process import start
    from suite import stub_for

    rng = random.Random(42)
    texts = [completion(rng) for _ in range(args.texts)]
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for cache in ("20000", "0"):
            process, address = start(["--data-dir", f"{tmp}/data-{cache}"],
                                     Path(tmp) / f"sidecar-{cache}.log",
                                     {"GUARDRAIL_MESSAGE_CACHE_ENTRIES": cache})
            try:
                stub = stub_for(address)
                if cache != "0":
                    pids = [process.pid, *descendants(process.pid)]
                    lockstep_stream(stub, texts[0], 64)  # warm the stream path
                    rows += bench_streams(stub, pids, texts)
                bench_chat(stub, random.Random(7), 1)  # warm-up conversation
                times = bench_chat(stub, rng, args.conversations)
                label = "with the message cache" if cache != "0" else "without the cache"
                rows.append((f"chat turn 20 (39 msgs) vs turn 1 (1 msg), {label}" + (
                    " (target <= 1.5x)" if cache != "0" else ""),
                    f"{times['turn 20'] / times['turn 1']:.2f}x ({times['turn 20']:.1f} ms "
                    f"vs {times['turn 1']:.1f} ms)"))
                rows.append((f"chat turn 20 vs its 2 new messages alone, {label}",
                             f"{times['turn 20'] / times['new only']:.2f}x "
                             f"({times['new only']:.1f} ms)"))
            finally:
                process.terminate()
                process.wait(timeout=30)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
