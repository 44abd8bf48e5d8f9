#!/usr/bin/env python3
"""netsync-ftpd vs Debian's vsftpd on loopback, with curl as the client.

Measures RETR and STOR of one SIZE-byte file (plain and TLS) and N concurrent
logins + LIST, for both servers in the same run, and prints the ratios
(netsync-ftpd / vsftpd: throughput >= 0.9 and login time <= 1.0 are the goals).

    python bench/bench_ftpd.py --size 1G --logins 200       # the issue's figures
    python bench/bench_ftpd.py --size 64M --logins 50 --rounds 1   # a quick run
    python bench/bench_ftpd.py --only logins --rounds 7     # the login storm alone

Needs root (both servers log a throwaway local user in), curl and
/usr/sbin/vsftpd (apt-get install -y vsftpd).
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAM_SRC = REPO / "packaging" / "pam.d" / "netsync-ftpd"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def common_conf(port: int, user_service: str, cert: str, key: str, tls: bool) -> str:
    return "\n".join([
        "listen=YES", "listen_address=127.0.0.1", f"listen_port={port}",
        "anonymous_enable=NO", "local_enable=YES", "write_enable=YES",
        f"pam_service_name={user_service}", "max_clients=0", "max_per_ip=0",
        "pasv_min_port=20000", "pasv_max_port=40000",
        f"ssl_enable={'YES' if tls else 'NO'}", f"rsa_cert_file={cert}",
        f"rsa_private_key_file={key}", "require_ssl_reuse=YES",
        "force_local_logins_ssl=YES", "force_local_data_ssl=YES", "",
    ])


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class Server:
    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name, self.port = name, port
        # netsync from this checkout, whatever is installed
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
        # The server and every process it forks in a cgroup of their own
        # (cgroup v1 cpuacct, where there is one): their CPU time is counted
        # whether or not each process is reaped by its parent.
        self.cgroup: Path | None = None
        if (CPUACCT / "cpuacct.usage").exists():
            cg = CPUACCT / f"bench-ftpd-{os.getpid()}-{port}"
            try:
                cg.mkdir()
                self.cgroup = cg
            except OSError:
                pass
        procs = str(self.cgroup / "cgroup.procs") if self.cgroup else None

        def join_cgroup() -> None:  # in the child, before exec: before any fork
            if procs:
                with open(procs, "w") as fh:
                    fh.write("0")

        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env, preexec_fn=join_cgroup)
        wait_port(port)

    def cpu_seconds(self) -> float:
        """CPU used so far by the server and its (exited) processes, once
        only the listener is left."""
        deadline = time.monotonic() + 10
        if self.cgroup is not None:
            while (len((self.cgroup / "cgroup.procs").read_text().split()) > 1
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            return int((self.cgroup / "cpuacct.usage").read_text()) / 1e9
        # Without cgroups: what the listener and the children it reaped used.
        time.sleep(1)
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.cgroup is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:  # busy until the last session process is gone
                    time.sleep(0.1)


def start(kind: str, work: Path, service: str, cert: str, key: str, tls: bool) -> Server:
    port = free_port()
    conf = work / f"{kind}-{'tls' if tls else 'plain'}.conf"
    text = common_conf(port, service, cert, key, tls)
    # Both servers' pre-login processes chroot into the same empty directory.
    text += "secure_chroot_dir=/var/run/vsftpd/empty\n"
    os.makedirs("/var/run/vsftpd/empty", exist_ok=True)
    if kind == "vsftpd":
        # Container-friendly, as Debian's vsftpd needs here.
        text += "seccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\nbackground=NO\n"
        argv = ["/usr/sbin/vsftpd", str(conf)]
    else:
        argv = [sys.executable, "-m", "netsync.ftpd", str(conf)]
    conf.write_text(text)
    return Server(kind, argv, port)


def curl(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def tls_args(tls: bool) -> list[str]:
    return ["--ssl-reqd", "-k"] if tls else []


def bench_transfer(srv: Server, user: str, pw: str, src: Path, tls: bool, home: Path) -> tuple[float, float]:
    url = f"ftp://127.0.0.1:{srv.port}/"
    auth = ["-u", f"{user}:{pw}"]
    t_stor = curl([*tls_args(tls), *auth, "-T", str(src), url + "bench.bin"])
    t_retr = curl([*tls_args(tls), *auth, "-o", "/dev/null", url + "bench.bin"])
    (home / "bench.bin").unlink(missing_ok=True)
    return t_retr, t_stor


def bench_logins(srv: Server, user: str, pw: str, n: int) -> float:
    url = f"ftp://127.0.0.1:{srv.port}/"

    def one(_: int) -> None:
        curl(["-u", f"{user}:{pw}", url])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="transfer size (e.g. 64M, 1G)")
    ap.add_argument("--logins", type=int, default=200, help="concurrent logins + LIST")
    ap.add_argument("--rounds", type=int, default=3, help="repetitions (medians are reported)")
    ap.add_argument("--only", choices=("transfers", "logins"),
                    help="run one scenario: RETR/STOR (plain and TLS) or the concurrent logins")
    args = ap.parse_args()
    size = parse_size(args.size)
    if os.geteuid() != 0:
        print("bench_ftpd.py needs root (local logins through PAM)", file=sys.stderr)
        return 2
    for tool in ("curl", "/usr/sbin/vsftpd"):
        if not shutil.which(tool):
            print(f"missing {tool} (apt-get install -y curl vsftpd)", file=sys.stderr)
            return 2

    name = "nsfb" + secrets.token_hex(3)
    pw = "Bench-" + secrets.token_hex(6)
    service = f"netsync-ftpd-bench-{name}"
    pam_path = Path("/etc/pam.d") / service
    work = Path(tempfile.mkdtemp(prefix="bench-ftpd-"))
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{pw}\n", text=True, check=True)
        shutil.copy(PAM_SRC, pam_path)
        home = Path(pwd.getpwnam(name).pw_dir)
        sys.path.insert(0, str(REPO / "src"))
        from netsync.ftpd.certs import make_cert

        cert, key = make_cert(str(work / "tls"), "localhost")
        src = work / "payload.bin"
        if args.only == "logins":
            size = 0
        with open(src, "wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(size // len(chunk)):
                fh.write(chunk)
            fh.write(chunk[: size % len(chunk)])
        # Both servers in each round, order alternating, medians reported: the
        # machine's background load shifts between measurements.
        samples: dict[str, dict[str, list[float]]] = {"vsftpd": {}, "netsync-ftpd": {}}
        for rnd in range(args.rounds):
            kinds = ("vsftpd", "netsync-ftpd") if rnd % 2 == 0 else ("netsync-ftpd", "vsftpd")
            for kind in kinds:
                for tls in (False, True):
                    if tls and args.only == "logins":
                        continue
                    srv = start(kind, work, service, cert, key, tls)
                    try:
                        r = samples[kind]
                        if args.only != "logins":
                            retr, stor = bench_transfer(srv, name, pw, src, tls, home)
                            tag = "tls" if tls else "plain"
                            r.setdefault(f"RETR {tag} MB/s", []).append(size / retr / 1e6)
                            r.setdefault(f"STOR {tag} MB/s", []).append(size / stor / 1e6)
                        if not tls and args.only != "transfers":
                            cpu0 = srv.cpu_seconds()
                            secs = bench_logins(srv, name, pw, args.logins)
                            cpu = (srv.cpu_seconds() - cpu0) / args.logins * 1e3
                            r.setdefault(f"{args.logins} logins+LIST s", []).append(secs)
                            r.setdefault("server CPU ms/login", []).append(cpu)
                            # per-round figures: the load shows which rounds were disturbed
                            print(f"round {rnd + 1} {kind:12} logins {secs:6.2f} s  "
                                  f"CPU {cpu:6.2f} ms/login  load {os.getloadavg()[0]:.2f}",
                                  file=sys.stderr, flush=True)
                    finally:
                        srv.stop()
        keys = list(samples["vsftpd"])
        print(f"size={size} bytes, logins={args.logins}, rounds={args.rounds} (medians)")
        print(f"{'metric':28} {'vsftpd':>12} {'netsync-ftpd':>13} {'ratio':>7}")
        for k in keys:
            v, n = statistics.median(samples["vsftpd"][k]), statistics.median(samples["netsync-ftpd"][k])
            print(f"{k:28} {v:12.2f} {n:13.2f} {n / v:7.2f}")
        login_key = f"{args.logins} logins+LIST s"
        if login_key in keys:
            # Both servers ran back to back in each round: the per-round ratio
            # cancels most of the load that other processes put on the machine.
            paired = [n / v for v, n in zip(samples["vsftpd"][login_key],
                                             samples["netsync-ftpd"][login_key], strict=True)]
            print(f"{'logins ratio, per round':28} {'':12} {'':13} {statistics.median(paired):7.2f}"
                  f"  ({' '.join(f'{r:.2f}' for r in paired)})")
            cpu_key = "server CPU ms/login"
            paired_cpu = [n / v for v, n in zip(samples["vsftpd"][cpu_key],
                                                 samples["netsync-ftpd"][cpu_key], strict=True)]
            print(f"{'CPU ratio, per round':28} {'':12} {'':13} {statistics.median(paired_cpu):7.2f}"
                  f"  ({' '.join(f'{r:.2f}' for r in paired_cpu)})")
        return 0
    finally:
        pam_path.unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", "-f", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
