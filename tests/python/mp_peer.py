"""A peer that uses only Python's standard multiprocessing.connection, for the interop tests.

    mp_peer.py client   ADDRESS AUTHKEY MESSAGE   connect, send MESSAGE, print the reply
    mp_peer.py listener ADDRESS AUTHKEY           listen, print the address, echo one message
                                                  back prefixed with b"py:"

AUTHKEY "-" means no key. ADDRESS is a Unix path or "host:port". Exit status 2 means the
handshake failed with AuthenticationError.
"""
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if sep and "/" not in text and port.isdigit():
        return (host.strip("[]"), int(port))
    return text


def format_address(address):
    return address if isinstance(address, str) else "%s:%d" % address


def main():
    role, address, key = sys.argv[1], parse_address(sys.argv[2]), sys.argv[3]
    authkey = None if key == "-" else key.encode()
    try:
        if role == "client":
            with Client(address, authkey=authkey) as conn:
                conn.send_bytes(sys.argv[4].encode())
                print(conn.recv_bytes().decode(), flush=True)
        else:
            with Listener(address, authkey=authkey) as listener:
                print(format_address(listener.address), flush=True)
                with listener.accept() as conn:
                    conn.send_bytes(b"py:" + conn.recv_bytes())
    except AuthenticationError as e:
        print("AuthenticationError:", e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
