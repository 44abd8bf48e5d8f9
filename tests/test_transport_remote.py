"""Remote specs parsed exactly as rsync's check_for_hostspec/start_client do."""

from __future__ import annotations

import pytest

from netsync.transport.remote import (
    Mode,
    RemoteSpec,
    SpecError,
    check_for_hostspec,
    parse_remote,
    plan_transfer,
    split_module,
)

# (argument, --port value, expected (host, path, port) or None for a local path)
HOSTSPECS = [
    ("host:path", 0, ("host", "path", 0)),
    ("user@host:/abs/path", 0, ("user@host", "/abs/path", 0)),
    ("host:", 0, ("host", "", 0)),
    ("host::module/dir", 0, ("host", "module/dir", -1)),
    ("host::module", 8730, ("host", "module", 8730)),
    ("host::", 0, ("host", "", -1)),
    ("u@h@host::mod", 0, ("u@h@host", "mod", -1)),
    ("rsync://host/module/path", 0, ("host", "module/path", -1)),
    ("rsync://user@host:8873/module", 0, ("user@host", "module", 8873)),
    ("RSYNC://host:/m", 0, ("host", "m", -1)),
    ("rsync://host/", 0, ("host", "", -1)),
    ("rsync://host", 0, ("host", "", -1)),
    ("rsync://host/mod", 9999, ("host", "mod", 9999)),  # --port applies without ":PORT"
    ("rsync://host:77/mod", 9999, ("host", "mod", 77)),
    ("rsync://[::1]:8873/mod", 0, ("::1", "mod", 8873)),
    ("rsync://[fe80::1]/mod", 0, ("fe80::1", "mod", -1)),
    ("rsync://host:x/mod", 0, ("rsync", "//host:x/mod", 0)),  # bad port: a shell spec!
    ("[::1]:path", 0, ("::1", "path", 0)),
    ("user@[::1]:path", 0, ("user@::1", "path", 0)),
    ("[::ffff:127.0.0.1]::mod", 0, ("::ffff:127.0.0.1", "mod", -1)),
    ("[::1]x:path", 0, None),  # junk after ']'
    ("[]:path", 0, None),
    ("x[::1]:path", 0, None),  # '[' not at the host start
    ("./a:b", 0, None),
    ("dir/file:name", 0, None),  # '/' before ':' is a local path
    ("/abs/a:b", 0, None),
    ("plainfile", 0, None),
    (":path", 0, ("", "path", 0)),  # empty host: "same host" in extra source args
    ("::mod", 0, ("", "mod", -1)),
    ("host:a:b", 0, ("host", "a:b", 0)),
    ("host:/x::y", 0, ("host", "/x::y", 0)),
]


@pytest.mark.parametrize(("arg", "port", "expected"), HOSTSPECS)
def test_check_for_hostspec(arg: str, port: int, expected: tuple[str, str, int] | None) -> None:
    assert check_for_hostspec(arg, port) == expected


def test_without_port_pointer_urls_are_not_special() -> None:
    # rsync passes a NULL port pointer when it only asks "is this remote?".
    assert check_for_hostspec("rsync://host/mod", None) == ("rsync", "//host/mod", 0)
    assert check_for_hostspec("host::mod", None) == ("host", "mod", -1)


def test_parse_remote_typed() -> None:
    assert parse_remote("bob@[::1]::mod/sub") == RemoteSpec("::1", "bob", "mod/sub", -1)
    spec = parse_remote("rsync://h:99/m/x")
    assert spec is not None and spec.url and spec.daemon and spec.port == 99
    assert parse_remote("local/dir") is None
    assert split_module("mod/a/b") == ("mod", "a/b")
    assert split_module("mod") == ("mod", "")


def test_plan_push_over_shell() -> None:
    plan = plan_transfer(["/etc", "a", "root@cli2:/root"])
    assert plan.mode is Mode.SHELL and plan.am_sender
    assert (plan.user, plan.host, plan.port) == ("root", "cli2", 0)
    assert plan.local_paths == ["/etc", "a"] and plan.remote_paths == ["/root"]


def test_plan_pull_with_extra_sources() -> None:
    plan = plan_transfer(["cli2:src", ":other", "cli2:", "/tmp"])
    assert plan.mode is Mode.SHELL and not plan.am_sender
    assert plan.remote_paths == ["src", "other", "."] and plan.local_paths == ["/tmp"]


def test_plan_empty_remote_path_is_dot() -> None:
    assert plan_transfer(["f", "host:"]).remote_paths == ["."]


def test_plan_daemon_modes() -> None:
    plan = plan_transfer(["rsync://u@h/mod/x", "::mod/y", "dst"])
    assert plan.mode is Mode.DAEMON and plan.port == 873 and plan.user == "u"
    assert plan.remote_paths == ["mod/x", "mod/y"] and plan.module == "mod"
    assert plan_transfer(["h::"]).remote_paths == [""]  # listing: nothing is turned into "."
    assert plan_transfer(["h::"]).local_paths == []
    over_ssh = plan_transfer(["f", "h::mod"], shell_cmd="ssh")
    assert over_ssh.mode is Mode.DAEMON_SHELL and over_ssh.am_sender
    assert plan_transfer(["f", "h::mod"], port=1234).port == 1234


def test_plan_local_copy() -> None:
    plan = plan_transfer(["a", "b/c:d"])
    assert plan.mode is Mode.LOCAL and plan.local_paths == ["a"]


@pytest.mark.parametrize(("args", "kw", "message"), [
    (["h:a", "k:b"], {}, "The source and destination cannot both be remote."),
    (["a", "h:b", "k:c"], {}, "Unexpected remote arg: h:b"),
    (["h:a", "b", "c"], {}, "Unexpected local arg: b"),
    (["h:a", "k:b", "c"], {}, "All source args must come from the same machine."),
    (["h::a", ":b", "c"], {}, "All source args must use the same hostspec format."),
    (["rsync://h:1/a", "rsync://h:2/b", "c"], {}, "All source args must use the same port number."),
    (["a", ""], {}, 'Empty destination arg specified (use "." or see --old-args).'),
    (["", "h:x"], {}, "Empty source arg specified."),
    (["a", "-h:x"], {}, "Invalid remote host: hostnames may not start with '-'."),
    (["a", "h:x"], {"password_file": "pw"}, "The --password-file option may only be used"),
    (["a", "h:x"], {"contimeout": 3}, "The --contimeout option may only be used"),
    (["a", "b"], {"files_from_host": "h"}, "--files-from cannot be remote when the transfer"),
    (["a", "h:x"], {"files_from_host": "k"}, "--files-from hostname is not the same"),
])
def test_plan_errors(args: list[str], kw: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        plan_transfer(args, **kw)
    assert str(err.value).startswith(message)
    assert err.value.code == 1


def test_daemon_path_must_start_with_module() -> None:
    with pytest.raises(SpecError) as err:
        plan_transfer(["h::/etc", "dst"])
    assert err.value.code == 5
    assert "must start with a module name" in str(err.value)
