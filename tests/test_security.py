"""Nobody gets root through the tool: what it reads from places others can write (the
datastore, /run/lock, the current directory, the network) is untrusted input. Each story
plays one such writer against the real stack and checks what the tool left."""

import json
import os
import re

import pytest
from world import error_lines

import pve_ontap_snapshot as tool

ESC = '\x1b'
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason='another user\'s files are made with chown, as root')


def stamp_of(world, vmid=101):
    result = world.run('vm', 'create', '-vm', vmid, '-no-register')
    assert result.code == 0, result.err
    return re.search(tool.STAMP_PATTERN, world.clones(world.vol1, vmid)[-1])[0]


# -- what reaches the terminal

def test_a_file_name_planted_in_a_vm_directory_reaches_vm_list_escaped(world):
    stamp = stamp_of(world)
    planted = f'vm-101-disk-0{ESC}[2J{ESC}[1A-snapshot-{stamp}.raw'
    world.disk(world.vol1, 101, planted).write_bytes(b'x')

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    assert ESC not in result.out and ESC not in result.err
    assert 'vm-101-disk-0\\x1b[2J\\x1b[1A-snapshot-' in result.out


def test_a_control_sequence_in_a_saved_config_cannot_erase_the_diff_above_it(world):
    stamp = stamp_of(world)
    (name,) = world.records(world.vol1, 101)
    path = world.vol1.path / 'images/101' / name
    manifest = json.loads(path.read_text())
    manifest.pop('signature', None)
    manifest['config'] += f'name: harmless{ESC}[1A{ESC}[2K\rdb\n'
    path.write_text(json.dumps(manifest))

    result = world.run('-dry-run', 'vm', 'restore', '-vm', 101, '-snapshot', stamp)

    assert result.code == 0, result.err
    assert ESC not in result.err and '\r' not in result.err
    assert '+name: harmless\\x1b[1A\\x1b[2K\\x0ddb' in result.err


def test_an_ontap_message_reaches_stderr_as_one_escaped_line(world):
    world.a.fail('POST', '/api/storage/file/clone', status=400, message=f'refused{ESC}]0;owned\x07\nERROR: all fine')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 1
    assert ESC not in result.err and '\x07' not in result.err
    assert len(error_lines(result)) == 1 and 'refused\\x1b]0;owned\\x07\\x0aERROR: all fine' in result.err


# -- local paths another user can prepare

@pytest.fixture
def local_lock(tmp_path, monkeypatch):
    """Off a PVE node: a change takes this node's lock (-local-lock) in $PVE_ONTAP_SNAPSHOT_LOCK_DIR."""
    monkeypatch.setattr(tool, 'CLUSTER_DIR', str(tmp_path / 'no-pve'))
    directory = tmp_path / 'run-lock'
    monkeypatch.setenv('PVE_ONTAP_SNAPSHOT_LOCK_DIR', str(directory))
    return directory


@as_root
def test_a_lock_directory_another_user_made_first_is_refused_and_its_link_not_followed(world, local_lock, tmp_path):
    victim = tmp_path / 'shadow'
    victim.write_text('root:secret\n')
    victim.chmod(0o600)
    local_lock.mkdir()
    local_lock.chmod(0o777)
    os.chown(local_lock, NOBODY, NOBODY)
    (local_lock / world.lock_name()).symlink_to(victim)
    before = world.state()

    result = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: lock directory {local_lock} is owned by nobody (uid {NOBODY}), mode 777: not '
                           "root's, who runs this, and writable by group or others, so another user could put "
                           'links'), line
    assert f'remove it (rm -r {local_lock})' in line
    assert victim.read_text() == 'root:secret\n' and world.state() == before


def test_a_link_where_the_lock_file_goes_is_not_followed(world, local_lock, tmp_path):
    victim = tmp_path / 'shadow'
    victim.write_text('root:secret\n')
    local_lock.mkdir(mode=0o700)
    (local_lock / world.lock_name()).symlink_to(victim)

    result = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line == f'ERROR: {local_lock / world.lock_name()} is a link: remove it', line
    assert victim.read_text() == 'root:secret\n' and world.vol1.snapshots == {}


@as_root
def test_root_never_falls_back_to_the_temp_directory(world, local_lock, tmp_path, monkeypatch):
    monkeypatch.delenv('PVE_ONTAP_SNAPSHOT_LOCK_DIR')
    taken = tmp_path / 'run' / 'lock' / 'pve-ontap-snapshot'
    taken.mkdir(parents=True)
    os.chown(taken, NOBODY, NOBODY)
    monkeypatch.setattr(tool, 'LOCK_DIR', str(taken))

    result = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    assert error_lines(result)[0].startswith(f'ERROR: lock directory {taken} is owned by nobody'), result.err
    assert world.vol1.snapshots == {}


def test_a_lock_directory_of_its_own_is_made_private(world, local_lock):
    result = world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    info = local_lock.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (os.geteuid(), 0o700)
    assert (local_lock / world.lock_name()).stat().st_mode & 0o777 == 0o600


# -- config.ini: who may change it

def run_here(world, directory, *argv):
    """The tool as typed in `directory`, without -config: it looks for ./config.ini first."""
    world._capture.readouterr()
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        code = tool.main([str(a) for a in argv])
    finally:
        os.chdir(cwd)
    captured = world._capture.readouterr()
    return type('Result', (), {'code': code, 'out': captured.out, 'err': captured.err})()


@as_root
def test_root_refuses_a_config_another_user_left_in_a_shared_directory(world, tmp_path):
    shared = tmp_path / 'tmp'
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / 'config.ini'
    planted.write_text(world.config.read_text().replace('verify = ', 'verify = false\n# '))
    os.chown(planted, NOBODY, NOBODY)
    requests = len(world.a.requests), len(world.pve.requests)

    result = run_here(world, shared, 'vm', 'list', '-vm', 101)

    assert result.code == 2
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: config file config.ini (found in the current directory, {shared}) is owned by '
                           f'nobody (uid {NOBODY}), mode 644: another user could change it'), line
    assert line.endswith('as root this tool refuses it: chown root config.ini && chmod 600 config.ini, or give '
                         'another file with -config'), line
    assert (len(world.a.requests), len(world.pve.requests)) == requests


@as_root
def test_root_refuses_a_config_others_may_write(world):
    world.config.chmod(0o662)
    result = world.run('vm', 'list', '-vm', 101)
    assert result.code == 2
    assert 'mode 662: another user could change it' in error_lines(result)[0]


def test_a_config_found_in_the_current_directory_is_named(world, tmp_path):
    result = run_here(world, world.config.parent, 'vm', 'list', '-vm', 101)
    assert result.code == 0, result.err
    assert f'INFO: config: {world.config}, found in the current directory' in result.err.splitlines()


def test_another_user_is_warned_of_a_config_others_may_write(world, monkeypatch, capsys):
    world.config.chmod(0o666)
    monkeypatch.setattr(tool.os, 'geteuid', lambda: 1000)
    tool.setup_logging('info')
    text = tool.read_config_file(str(world.config))
    assert text == world.config.read_text()
    assert 'mode 666: another user could change it' in capsys.readouterr().err


@as_root
def test_doctor_fails_a_config_another_user_may_change(world):
    world.config.chmod(0o646)
    result = world.run('doctor', '-storage', 'ONTAP01')
    assert result.code == 1
    (line,) = [line for line in result.out.splitlines() if line.startswith('fail  config.ini')]
    assert 'mode 646: another user could change it' in line and 'as root, every command refuses it' in line


# -- programs and paths

def test_programs_run_by_absolute_path_whatever_path_says(world, tmp_path, monkeypatch):
    evil, calls = tmp_path / 'evil', tmp_path / 'calls'
    evil.mkdir()
    (evil / 'qm').write_text(f'#!/bin/sh\necho evil >> {calls}\n')
    (evil / 'qm').chmod(0o755)
    real = tmp_path / 'qm'
    real.write_text(f'#!/bin/sh\necho "qm $*" >> {calls}\n')
    real.chmod(0o755)
    monkeypatch.setenv('PATH', f'{evil}:{os.environ["PATH"]}')
    monkeypatch.setitem(tool.PROGRAMS, 'qm', str(real))
    monkeypatch.setattr(tool, 'local_pve_node', lambda: 'pve2')

    assert world.run('vm', 'create', '-vm', 101).code == 0

    assert calls.read_text() == 'qm disk rescan --vmid 101\n'


@pytest.mark.parametrize('node', ['../../../etc', 'pve1/../pve2', 'pve 1', '-pve', ''])
def test_a_node_name_pve_would_not_allow_never_becomes_a_path(node):
    with pytest.raises(tool.Failure, match='is none PVE allows'):
        tool.node_config_path({'node': node, 'vmid': 100, 'type': 'qemu'})


@pytest.mark.parametrize('path', ['relative/dir', '/mnt/pve/../../etc', '/mnt/pve/x/', '/mnt/pve/\x1b[2J'])
def test_a_storage_path_that_is_no_plain_absolute_path_is_never_unmounted(path):
    with pytest.raises(tool.Failure, match='is no plain absolute path'):
        tool.mount_path('X', {'path': path})
