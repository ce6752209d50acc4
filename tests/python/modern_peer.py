"""A peer speaking the Python 3.12+ "{sha256}" handshake, written with the standard hmac module
on top of an unauthenticated multiprocessing.connection (this machine's Python is 3.11, whose
own handshake is the legacy HMAC-MD5 one).

    modern_peer.py client   ADDRESS AUTHKEY MESSAGE   answer, then challenge; send MESSAGE,
                                                      print the reply
    modern_peer.py listener ADDRESS AUTHKEY           challenge, then answer; echo one message
                                                      back prefixed with b"py:"

Every response this peer sends is b"{sha256}" + HMAC-SHA256 over the whole challenge, prefix
included, and it demands the same form back. Exit status 2: authentication failed.
"""
import hmac
import os
import sys
from multiprocessing.connection import Client, Listener

CHALLENGE, WELCOME, FAILURE = b"#CHALLENGE#", b"#WELCOME#", b"#FAILURE#"


class Refused(Exception):
    pass


def mac(authkey, message):
    return b"{sha256}" + hmac.new(authkey, message, "sha256").digest()


def challenge(conn, authkey):
    message = b"{sha256}" + os.urandom(40)
    conn.send_bytes(CHALLENGE + message)
    ok = hmac.compare_digest(conn.recv_bytes(256), mac(authkey, message))
    conn.send_bytes(WELCOME if ok else FAILURE)
    if not ok:
        raise Refused("the peer's response was wrong")


def answer(conn, authkey):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE + b"{sha256}"):
        raise Refused("not a {sha256} challenge: %r" % message[:24])
    conn.send_bytes(mac(authkey, message[len(CHALLENGE):]))
    if conn.recv_bytes(256) != WELCOME:
        raise Refused("our response was rejected")


def main():
    role, address, authkey = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    try:
        if role == "client":
            with Client(address) as conn:
                answer(conn, authkey)
                challenge(conn, authkey)
                conn.send_bytes(sys.argv[4].encode())
                print(conn.recv_bytes().decode(), flush=True)
        else:
            with Listener(address) as listener:
                print(listener.address, flush=True)
                with listener.accept() as conn:
                    challenge(conn, authkey)
                    answer(conn, authkey)
                    conn.send_bytes(b"py:" + conn.recv_bytes())
    except Refused as e:
        print("refused:", e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
