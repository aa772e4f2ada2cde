"""Write the small seed corpus under ``fuzz/corpus/`` (valid inputs of each decoder);
rerun after a format change: ``python fuzz/make_corpus.py``."""

from __future__ import annotations

import hashlib
import os

from raftpy import codec
from raftpy.kv import joining, protocol
from raftpy.messages import AppendEntries, Entry, InstallSnapshot, RequestVote, TimeoutNow
from raftpy.storage import records
from raftpy.trio import handshake
from raftpy.trio.framing import encode_frame

HERE = os.path.dirname(os.path.abspath(__file__))


def seeds() -> dict[str, list[bytes]]:
    messages = [
        RequestVote(term=3, src=1, dst=2, last_log_index=7, last_log_term=2),
        AppendEntries(term=3, src=1, dst=2, prev_log_index=1, prev_log_term=1,
                      entries=(Entry(2, 3, b"put k v"), Entry(3, 3, b"")), leader_commit=1),
        InstallSnapshot(term=3, src=1, dst=2, last_included_index=9, last_included_term=2,
                        offset=0, data=b"snapshot", done=True),
        TimeoutNow(term=3, src=1, dst=2, last_log_index=7, last_log_term=2),
    ]
    encoded = [codec.encode(m) for m in messages]
    hellos = [handshake.encode_hello(handshake.Hello("c", 2, address="127.0.0.1:7002")),
              handshake.encode_hello(handshake.Hello("c", 4, role="join")),
              handshake.encode_hello(handshake.Hello("c", None, role="client")),
              handshake.encode_reply(handshake.HelloReply(ok=True, cluster_id="c", node_id=1)),
              handshake.encode_reply(handshake.HelloReply(ok=False, reason="no"))]
    requests = [protocol.encode(r) for r in (
        {"op": "put", "key": "k", "value": "v", "session": 1, "seq": 2, "ack": 1},
        {"op": "get", "key": "k"}, {"op": "transfer", "to": None},
        {"op": "add_member", "id": 4, "address": "127.0.0.1:7004", "role": "voter"},
        {"ok": False, "error": "not_leader", "message": "m", "leader_id": 2})]
    log = b"".join(records.encode_entry(e) for e in (Entry(1, 1, b"a"), Entry(2, 1, b"bb")))
    token = joining.new_token("c", 4, "ab" * 32, ["127.0.0.1:7001"], expires=1e9)
    join = [token.encode().encode(), protocol.encode(
        {"op": "join", "id": 4, "secret": b"s" * 32, "csr": "-----BEGIN", "hosts": ["h"]})]
    return {
        "join": join,
        "frames": [b"\x05" + b"".join(encode_frame(p) for p in encoded + hellos)],
        "handshake": hellos,
        "codec": encoded,
        "kv": requests,
        "records": [log, log[:-3]],
    }


def main() -> None:
    for target, inputs in seeds().items():
        directory = os.path.join(HERE, "corpus", target)
        os.makedirs(directory, exist_ok=True)
        for data in inputs:
            name = hashlib.sha1(data).hexdigest()[:16]
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
