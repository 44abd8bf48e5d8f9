"""netsync-ftpd: a vsftpd-compatible FTP/FTPS server built on pyftpdlib.

Independent of the rsync engine: nothing here imports netsync's sync code.
"""

__version__ = "0.1.0"
