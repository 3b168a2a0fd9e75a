"""Test doubles shared by unit and integration tests: virtual time and an in-memory Tentacle."""
