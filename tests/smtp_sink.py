"""A real SMTP server for the alerting tests (aiosmtpd, from PyPI).

Usage: smtp_sink.py HOST PORT CERT KEY USER PASSWORD OUTDIR

STARTTLS is required and AUTH (PLAIN/LOGIN, only after STARTTLS) with
USER/PASSWORD is required before MAIL. Every accepted message is written
to OUTDIR as NNN.eml (the raw message) with NNN.json (envelope sender,
recipients, the authenticated login, whether TLS was on). Prints "ready"
once listening; stops on SIGTERM.
"""
import json
import os
import signal
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, certfile, keyfile, user, password, outdir = sys.argv[1:8]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        stem = os.path.join(outdir, str(time.time_ns()))
        with open(stem + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "login": session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
            "tls": session.ssl is not None,
        }
        with open(stem + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(stem + ".eml.tmp", stem + ".eml")
        return "250 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    return AuthResult(success=ok, auth_data=auth_data.login if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(certfile, keyfile)
controller = Controller(
    Handler(),
    hostname=host,
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
