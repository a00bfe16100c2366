"""An OTLP/HTTP trace receiver for the tests: decodes each POST /v1/traces body with the
official generated classes of opentelemetry-proto (pinned in requirements.txt), so a
malformed body fails here, not in our own code. Prints the port on the first line of
stdout, then one JSON line per span received:

  {"resource": {...}, "scope": "name", "trace_id": hex, "span_id": hex, "parent": hex,
   "name": ..., "kind": int, "start": ns, "end": ns, "attrs": {...}, "status": int,
   "status_message": str, "flags": int, "content_type": str}

A body that does not decode, or ids of the wrong length, answer 400 and print
{"error": ...}.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value", "bytes_value"):
        return repr(getattr(v, kind))
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def fail(self, why):
        emit({"error": why})
        self.send_response(400)
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            return self.fail("path " + self.path)
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except DecodeError as e:
            return self.fail("decode: %s" % e)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    if len(s.trace_id) != 16 or len(s.span_id) != 8:
                        return self.fail("id length")
                    if s.parent_span_id and len(s.parent_span_id) != 8:
                        return self.fail("parent id length")
                    emit({
                        "resource": attrs(rs.resource.attributes),
                        "scope": ss.scope.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attrs": attrs(s.attributes),
                        "status": s.status.code,
                        "status_message": s.status.message,
                        "flags": s.flags,
                        "content_type": self.headers.get("content-type"),
                        "auth": self.headers.get("x-collector-key"),
                    })
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    emit(server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
