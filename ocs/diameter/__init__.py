"""Diameter base protocol (RFC 6733): sans-I/O codec, dictionary, framer and peer state machine.

Nothing in this package knows about charging; the asyncio transport lives in ``transport``.
"""
