"""The ProjectX Gateway: our REST and user-hub client, and a protocol-true simulator.

This package knows nothing of Django: the Django apps depend on it, never the other way round.
"""
