#!/usr/bin/env python3
"""An independent HPACK implementation (python3-hpack) for src/http2's tests.

Reads one JSON request on stdin, writes one JSON answer on stdout. Strings are latin1 both ways
(header octets as JS strings); blocks are hex. One Decoder / Encoder serves the whole request, so
the blocks of a request share a dynamic table as they would on one connection.

  {"op": "decode", "blocks": [hex, ...], "maxHeaderListSize": n}
      -> {"lists": [[name, value, name, value, ...] | {"error": message}, ...]}
  {"op": "encode", "lists": [[name, value, ...], ...], "tableSizes": [n | null, ...], "huffman": bool}
      -> {"blocks": [hex, ...]}   (tableSizes[i], when not null, is set on the encoder before list i)
  {"op": "huffman-table"} -> {"codes": [...], "lengths": [...]}
  {"op": "static-table"}  -> {"entries": [[name, value], ...]}
"""
import json
import sys

import hpack
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable


def latin1(b):
    return b.decode("latin-1") if isinstance(b, (bytes, bytearray)) else b


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    if op == "decode":
        d = hpack.Decoder(max_header_list_size=req.get("maxHeaderListSize", 1 << 30))
        lists = []
        for h in req["blocks"]:
            try:
                fields = d.decode(bytes.fromhex(h), raw=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported to the test
                lists.append({"error": type(e).__name__ + ": " + str(e)})
                continue
            flat = []
            for name, value in fields:
                flat.append(latin1(name))
                flat.append(latin1(value))
            lists.append(flat)
        out = {"lists": lists}
    elif op == "encode":
        e = hpack.Encoder()
        blocks = []
        sizes = req.get("tableSizes") or []
        for i, flat in enumerate(req["lists"]):
            if i < len(sizes) and sizes[i] is not None:
                e.header_table_size = sizes[i]
            pairs = [
                (flat[k].encode("latin-1"), flat[k + 1].encode("latin-1")) for k in range(0, len(flat), 2)
            ]
            blocks.append(e.encode(pairs, huffman=req.get("huffman", True)).hex())
        out = {"blocks": blocks}
    elif op == "huffman-table":
        out = {"codes": list(REQUEST_CODES), "lengths": list(REQUEST_CODES_LENGTH)}
    elif op == "static-table":
        out = {"entries": [[latin1(n), latin1(v)] for n, v in HeaderTable.STATIC_TABLE]}
    else:
        raise SystemExit("unknown op " + op)
    json.dump(out, sys.stdout)


main()
