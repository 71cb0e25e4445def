"""The phone API (``/api/v6``, PROTOCOL.md section 6): see app.py for the factory and routes."""
