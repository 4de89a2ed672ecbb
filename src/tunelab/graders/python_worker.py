"""The process a python grader's code runs in (started by tunelab.graders.python_grader, never
imported by tunelab): it loads the source, then answers one JSON line per request on stdin with
one JSON line on the original stdout. Standard library only, so it runs under `python -I`.

Before the user's code runs: network access is cut off at the socket module (socket creation,
connections and name lookups raise), the address space is capped, and print() goes to stderr so
it cannot corrupt the replies. This guards against accidents, not against hostile code: python
graders run only when the configuration enables them.
"""
import json
import resource
import socket
import sys
import traceback


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in tunelab python graders")


def _cut_network():
    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            _no_network()

    socket.socket = NoSocket
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "socketpair",
                 "create_server", "fromfd"):
        setattr(socket, name, _no_network)


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<grader>"]
    line = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{line}"


def main() -> None:
    replies = sys.stdout
    sys.stdout = sys.stderr
    memory_mb = int(sys.argv[1])
    if memory_mb > 0:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _cut_network()

    def reply(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    setup = json.loads(sys.stdin.readline())
    namespace = {"__name__": "grader"}
    try:
        exec(compile(setup["source"], "<grader>", "exec"), namespace)
        grade = namespace["grade"]
    except BaseException as exc:  # noqa: BLE001 (anything the user's module does is reported)
        reply({"error": f"does not load: {_where(exc)}"})
        return
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            score = grade(request["sample"], request["item"])
        except BaseException as exc:  # noqa: BLE001 (including SystemExit from the grader)
            reply({"error": _where(exc)})
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
            reply({"error": f"grade() returned {score!r}, not a number"})
        else:
            reply({"score": float(score)})


if __name__ == "__main__":
    main()
