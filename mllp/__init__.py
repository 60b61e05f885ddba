"""MLLP framing and transport for Interlink; knows nothing of what a message means.

- ``mllp.codec``: sans-IO framing (``encode``, ``Decoder`` and its events), stdlib only.
- ``mllp.server``: the Twisted listener protocol and factory, driven by a ``FrameHandler``.
- ``mllp.endpoints``: listener and connector endpoints, plain or TLS.
- ``mllp.client``: ``send_messages``, a small sender that waits for each answer.

Nothing is imported here, so using the codec never pulls in Twisted.
"""
