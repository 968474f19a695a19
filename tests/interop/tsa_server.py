"""A local RFC 3161 time-stamp authority for the tests: OpenSSL's own TSA (`openssl ts
-reply`) behind HTTP, as RFC 3161 section 3.4 transports it (POST application/timestamp-query,
answered with application/timestamp-reply).

    tsa_server.py DIR PORT_FILE

DIR holds tsa.cnf (a [tsa] section naming the signer certificate and key) and a serial
file. The server binds a free loopback port and writes it to PORT_FILE. While DIR/down
exists it answers 503, as a TSA under maintenance would.
"""

import http.server
import os
import subprocess
import sys
import tempfile

DIR, PORT_FILE = sys.argv[1], sys.argv[2]


class Tsa(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if os.path.exists(os.path.join(DIR, "down")):
            self.send_error(503, "down for maintenance")
            return
        length = int(self.headers.get("Content-Length", "0"))
        if self.headers.get("Content-Type") != "application/timestamp-query" or length > 65536:
            self.send_error(400, "not a time-stamp query")
            return
        query = self.rfile.read(length)
        with tempfile.TemporaryDirectory() as tmp:
            q, r = os.path.join(tmp, "q.tsq"), os.path.join(tmp, "r.tsr")
            with open(q, "wb") as f:
                f.write(query)
            done = subprocess.run(
                ["openssl", "ts", "-reply", "-config", "tsa.cnf", "-queryfile", q, "-out", r],
                cwd=DIR, capture_output=True)
            if done.returncode != 0:
                self.send_error(500, done.stderr.decode(errors="replace")[-200:])
                return
            with open(r, "rb") as f:
                reply = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tsa)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
