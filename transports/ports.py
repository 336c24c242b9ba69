"""The UDP simulation convention's ports (python-fido2's and trussed's device suites, solo1's
simulator): the key binds PORT and answers to PEER_PORT. A module of their own, so that the
command line names them without loading a transport."""

PORT = 8111
PEER_PORT = 7112
