"""The rsync daemon (``netsync --daemon``): configuration, access control, authentication.

The modules here are pure and side-effect free apart from reading files and
resolving names, so the networking engine can call them from each
per-connection process exactly where rsync's clientserver.c does.
"""
