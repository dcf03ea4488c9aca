"""The service layer: every change the admin plane makes goes through here.

Functions take an open SQLAlchemy session and the time; they validate, write
and audit in the caller's transaction, and raise :mod:`web.services.errors`.
"""
