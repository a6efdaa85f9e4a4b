"""Nobody gets root or a secret through the tool: what it reads from places others can write (the
datastore, /run/lock, the current directory, the network) is untrusted input, and no password,
token or cookie reaches its output. Each story plays one such writer against the real stack and
checks what the tool left."""

import json
import os

import pytest
from world import (
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    OLDEST_STAMP,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    PVE_USER,
    error_lines,
    pve_reads_nfs_directories,
    recording_https_server,
)

import pve_ontap_snapshot as tool

ESC = '\x1b'
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason='another user\'s files are made with chown, as root')


# -- what reaches the terminal

def test_a_file_name_planted_in_a_vm_directory_reaches_vm_list_escaped(world):
    stamp = world.vm_snapshot(101, '-no-register')
    planted = f'vm-101-disk-0{ESC}[2J{ESC}[1A-snapshot-{stamp}.raw'
    world.disk(world.vol1, 101, planted).write_bytes(b'x')

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    assert ESC not in result.out and ESC not in result.err
    assert 'vm-101-disk-0\\x1b[2J\\x1b[1A-snapshot-' in result.out


def test_a_control_sequence_in_a_saved_config_cannot_erase_the_diff_above_it(world):
    stamp = world.vm_snapshot(101, '-no-register')
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
    monkeypatch.setattr(tool.Node, 'CLUSTER_DIR', str(tmp_path / 'no-pve'))
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
    monkeypatch.setattr(tool.Locks, 'NODE_DIR', str(taken))

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
    text = tool.ConfigFile.read_text(str(world.config))
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
    monkeypatch.setitem(tool.Node.PROGRAMS, 'qm', str(real))
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve2')

    assert world.run('vm', 'create', '-vm', 101).code == 0

    assert calls.read_text() == 'qm disk rescan --vmid 101\n'


@pytest.mark.parametrize('node', ['../../../etc', 'pve1/../pve2', 'pve 1', '-pve', ''])
def test_a_node_name_pve_would_not_allow_never_becomes_a_path(node):
    with pytest.raises(tool.Failure, match='is none PVE allows'):
        tool.Node.config_path({'node': node, 'vmid': 100, 'type': 'qemu'})


@pytest.mark.parametrize('path', ['relative/dir', '/mnt/pve/../../etc', '/mnt/pve/x/', '/mnt/pve/\x1b[2J'])
def test_a_storage_path_that_is_no_plain_absolute_path_is_never_unmounted(path):
    with pytest.raises(tool.Failure, match='is no plain absolute path'):
        tool.StorageMount.mount_path('X', {'path': path})


# -- the network: credentials go to the configured hosts only

def redirect_to(target):
    return lambda request: (307, {'Location': f'https://{target.host}{request["path"]}'}, b'')


def pve_at(world, host):
    return (f'proxmox_host = {host}\nproxmox_user = root@pam\nproxmox_pass = {PVE_PASSWORD}\n'
            f'proxmox_verify = {world.a.cafile}\n')


def test_a_login_redirected_elsewhere_sends_the_password_nowhere_else(world, ontap_ca):
    with recording_https_server(ontap_ca, lambda request: (500, {}, b'')) as elsewhere, \
            recording_https_server(ontap_ca, redirect_to(elsewhere)) as proxmox:
        world.write_config(proxmox=pve_at(world, proxmox.host))
        result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 1
    (line,) = error_lines(result)
    assert line == (f'ERROR: Proxmox {proxmox.host}: login: answered with a redirect to https://{elsewhere.host}'
                     '/api2/json/access/ticket, not followed: the credentials go to the configured host only'), line
    assert [request['path'] for request in proxmox] == ['/api2/json/access/ticket'] and elsewhere == []


def test_the_login_reads_no_netrc(world, ontap_ca, tmp_path, monkeypatch):
    (tmp_path / '.netrc').write_text('machine 127.0.0.1 login netrc-user password netrc-Secr3t\n')
    (tmp_path / '.netrc').chmod(0o600)
    monkeypatch.setenv('HOME', str(tmp_path))
    with recording_https_server(ontap_ca, lambda request: (401, {}, b'{"data": null}')) as proxmox:
        world.write_config(proxmox=pve_at(world, proxmox.host))
        result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 1 and 'login as root@pam failed' in error_lines(result)[0]
    (login,) = proxmox
    assert 'Authorization' not in login['headers'] and b'netrc' not in login['body']


def test_an_api_call_redirected_elsewhere_is_not_followed(world, ontap_ca):
    ticket = json.dumps({'data': {'ticket': 'PVE:root@pam:T1CKET', 'CSRFPreventionToken': 'C5RF'}}).encode()

    def proxmox_answer(request):
        if request['path'].endswith('/access/ticket'):
            return 200, {'Content-Type': 'application/json'}, ticket
        return redirect_to(elsewhere)(request)

    with recording_https_server(ontap_ca, lambda request: (200, {}, b'{"data": []}')) as elsewhere, \
            recording_https_server(ontap_ca, proxmox_answer) as proxmox:
        world.write_config(proxmox=pve_at(world, proxmox.host))
        result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 1
    assert 'answered with a redirect to' in error_lines(result)[0] and elsewhere == []
    assert 'PVEAuthCookie=PVE:root@pam:T1CKET' in proxmox[1]['headers']['Cookie']


def test_an_ontap_call_redirected_elsewhere_is_not_followed(world, ontap_ca):
    with recording_https_server(ontap_ca, lambda request: (200, {}, b'{}')) as elsewhere, \
            recording_https_server(ontap_ca, redirect_to(elsewhere)) as ontap:
        world.write_config(ONTAP01=f'host = {ontap.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                                   f'verify = {world.a.cafile}\n')
        result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 1
    assert 'not followed: the credentials go to the configured host only' in error_lines(result)[0]
    assert len(ontap) == 1 and elsewhere == []


def test_verify_false_is_said_once_per_run_and_side(world):
    world.write_config(proxmox=pve_at(world, world.pve_host).replace(f'proxmox_verify = {world.a.cafile}',
                                                                     'proxmox_verify = false'),
                       ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = false\n')
    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if 'its certificate is not checked' in line]
    assert warnings == [
        (f'WARNING: Proxmox {world.pve_host}: proxmox_verify = false: its certificate is not checked, so anyone on the '
         'way can pose as PVE and read the credentials of root@pam'),
        (f'WARNING: ONTAP {world.a.host}: verify = false in [ONTAP01]: its certificate is not checked, so anyone on '
         'the way can pose as the cluster and read the credentials of admin')]


def test_a_ca_bundle_the_environment_names_is_trusted_where_verify_is_true(world, monkeypatch):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = true\n')
    assert world.run('storage', 'list', '-storage', 'ONTAP01').code == 1
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', world.a.cafile)
    result = world.run('storage', 'list', '-storage', 'ONTAP01')
    assert result.code == 0, result.err


# -- the datastore: a saved config is screened, a manifest checked

# What a writer on the datastore would add to VM 101's saved config to get root on the node.
PLANTED = {
    'args': '-drive file=/etc/shadow,if=virtio',
    'hookscript': 'local:snippets/owned.sh',
    'hostpci0': '0000:01:00.0',
    'usb0': 'host=1d6b:0002',
    'serial0': '/dev/ttyS0',
    'parallel0': '/dev/parport0',
    'scsi1': '/dev/sda',
    'scsi2': 'ONTAP01:100/vm-100-disk-2.qcow2,size=2G',      # another VM's disk
    'bogus-key': 'unknown to the tool',
}


def manifest_of(world, vmid, stamp):
    (name,) = [n for n in world.records(world.vol1, vmid) if stamp in n]
    return world.vol1.path / 'images' / str(vmid) / name


def plant(world, vmid, stamp, settings, unsign=True, **changes):
    """Add `settings` to the config in the manifest of snapshot `stamp`, as a writer on the NFS export would."""
    path = manifest_of(world, vmid, stamp)
    manifest = json.loads(path.read_text())
    if unsign:
        manifest.pop('signature')
    manifest['config'] += ''.join(f'{key}: {value}\n' for key, value in settings.items())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return manifest


def test_a_snapshot_manifest_is_signed_with_the_clusters_key(world, cluster_dir):
    stamp = world.vm_snapshot(101, '-no-register')
    manifest = json.loads(manifest_of(world, 101, stamp).read_text())
    key = (cluster_dir / tool.Manifest.KEY_FILE).read_text().strip()
    assert manifest['signature'] == tool.Manifest.signature(manifest, bytes.fromhex(key))
    assert (cluster_dir / tool.Manifest.KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_with_config_puts_back_none_of_what_a_datastore_writer_planted(world):
    stamp = world.vm_snapshot(101, '-no-register')
    world.pve.vm(101).config['memory'] = '4096'
    plant(world, 101, stamp, PLANTED)

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    config = world.pve.vm(101).config
    assert not set(PLANTED) & set(config), config
    assert str(config['memory']) == '1024'      # what the allowlist takes is put back
    assert 'unsigned (made before manifests were signed, or off a node)' in result.err
    for key, why in [('args', 'only root@pam may set it'), ('hostpci0', 'a host device: only root@pam may set it'),
                     ('scsi1', 'a host path: only root@pam may set it'),
                     ('scsi2', 'a volume of guest 100, not of 101'), ('bogus-key', 'a setting unknown to this tool')]:
        assert f'  {key}: kept as it is ({why}; -allow-key {key} has it put back)' in result.err, result.err


def test_a_dry_run_shows_what_is_kept_and_what_allow_key_puts_back(world):
    stamp = world.vm_snapshot(101, '-no-register')
    plant(world, 101, stamp, {'args': '-cpu host', 'hookscript': 'local:snippets/owned.sh'})
    before = world.state()

    result = world.run('-dry-run', 'vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-allow-key',
                       'args')

    assert result.code == 0, result.err
    assert '+args: -cpu host' in result.err
    assert '  args: "-cpu host" is put back only because -allow-key names it' in result.err
    assert '  hookscript: kept as it is (only root@pam may set it' in result.err
    assert world.state() == before


def test_allow_key_puts_a_root_only_setting_back_by_name(world):
    stamp = world.vm_snapshot(101, '-no-register')
    plant(world, 101, stamp, {'args': '-cpu host', 'hookscript': 'local:snippets/owned.sh'})
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-allow-key', 'args', '-yes')
    assert result.code == 0, result.err
    config = world.pve.vm(101).config
    assert config['args'] == '-cpu host' and 'hookscript' not in config


def test_a_root_only_setting_the_vm_has_now_is_kept_too(world):
    stamp = world.vm_snapshot(101, '-no-register')
    world.pve.vm(101).config['hookscript'] = 'local:snippets/backup-hook.sh'     # set by root after the snapshot
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')
    assert result.code == 0, result.err
    assert world.pve.vm(101).config['hookscript'] == 'local:snippets/backup-hook.sh'


def test_as_new_copies_none_of_what_a_datastore_writer_planted_and_shows_the_new_config(world):
    pve_reads_nfs_directories(world)
    stamp = world.vm_snapshot(101, '-no-register')
    plant(world, 101, stamp, PLANTED)

    shown = world.run('-dry-run', 'vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert shown.code == 0 and world.pve.vm(201) is None, shown.err
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    assert result.code == 0, result.err
    for run in (shown, result):
        assert 'vm restore -as-new makes VM 201 on node pve2 from snapshot' in run.err
        assert '  scsi0: ONTAP01:201/vm-201-disk-0.raw,size=1G' in run.err
        assert '  args: "-drive file=/etc/shadow,if=virtio" (only root@pam may set it; -allow-key args copies it)' \
            in run.err
    config = world.pve.vm(201).config
    assert not set(PLANTED) & set(config), config


def test_as_new_with_an_allowed_root_only_setting_asks_first(world):
    pve_reads_nfs_directories(world)
    stamp = world.vm_snapshot(101, '-no-register')
    plant(world, 101, stamp, {'hostpci0': '0000:01:00.0'})
    before = world.state()

    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201, '-allow-key', 'hostpci0')
    assert refused.code == 2 and 'not asking without a terminal; add -yes' in error_lines(refused)[0]
    assert world.state() == before
    done = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201, '-allow-key', 'hostpci0', '-yes')
    assert done.code == 0, done.err
    assert world.pve.vm(201).config['hostpci0'] == '0000:01:00.0'


def test_a_manifest_changed_since_it_was_signed_is_not_used(world):
    stamp = world.vm_snapshot(101, '-no-register')
    plant(world, 101, stamp, {'memory': '8192'}, unsign=False)
    before = world.state()

    with_config = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')
    as_new = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    for result in (with_config, as_new):
        assert result.code == 1
        assert 'fails its signature check: it was changed since this tool wrote it' in error_lines(result)[0]
    assert 'restore without -with-config to put the disks back alone' in error_lines(with_config)[0]
    assert 'add -no-saved-config to take the current config of VM 101 instead' in error_lines(as_new)[0]
    assert world.state() == before
    plain = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-yes')
    assert plain.code == 0 and 'fails its signature check' in plain.err, plain.err


def test_a_manifest_copied_from_another_snapshot_is_not_used(world):
    older = world.vm_snapshot(101, '-no-register')
    newer = world.vm_snapshot(101, '-no-register')
    manifest_of(world, 101, newer).write_text(manifest_of(world, 101, older).read_text())
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', newer, '-with-config', '-yes')
    assert result.code == 1
    assert f"snapshot '{older}', not of 101, {newer}: it was put there from elsewhere" in error_lines(result)[0]


def test_a_corrupt_manifest_is_named_and_as_new_goes_on_only_when_told(world):
    pve_reads_nfs_directories(world)
    stamp = world.vm_snapshot(101, '-no-register')
    path = manifest_of(world, 101, stamp)
    path.write_text(path.read_text()[:40])

    listed = world.run('vm', 'list', '-vm', 101)
    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    with_config = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-yes')
    told = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201, '-no-saved-config')

    assert listed.code == 0 and 'complete; its manifest cannot be used' in listed.out
    assert f'WARNING: VM 101: snapshot {stamp}: manifest {path.relative_to(world.vol1.path)} on ONTAP01 cannot be ' \
        'read: it is no JSON' in listed.err
    assert with_config.code == 1 and 'cannot be read: it is no JSON' in error_lines(with_config)[0]

    assert refused.code == 1
    assert f'manifest {path.relative_to(world.vol1.path)} on ONTAP01 cannot be read: it is no JSON' in \
        error_lines(refused)[0]
    assert told.code == 0, told.err
    assert world.pve.vm(201).config['memory'] == str(world.pve.vm(101).config['memory'])


# -- secrets

EVERY_COMMAND = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 2), ('vm', 'list', '-vm', 100),
    ('vm', 'create', '-vm', 101), ('vm', 'delete', '-vm', 100, '-snapshot', OLDEST_STAMP),
    ('storage', 'create', '-storage', 'ONTAP01'), ('storage', 'list', '-storage', 'ONTAP01'),
    ('storage', 'show', '-storage', 'ONTAP02'), ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'unmount', '-storage', 'ONTAP01-CLONE'),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT, '-force', '-yes'),
    ('vm', 'create', '-vm', 999), ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'nope'),
    ('vm', 'create', '-all', '-freeze', '-keep', 3), ('vm', 'restore', '-vm', 101, '-snapshot', OLDEST_STAMP, '-yes'),
    ('vm', 'restore', '-vm', 101, '-storage-snapshot', MARCH_SNAPSHOT, '-yes'),
]


def test_no_secret_in_any_output_even_at_debug(world):
    world.pve.apitokens[f'{PVE_USER}!backup'] = 'token-Secr3t-value'
    world.with_agent(100)
    for vmid in (100, 101):
        world.disk(world.vol1, vmid, f'vm-{vmid}-disk-0-snapshot-{OLDEST_STAMP}.raw').write_bytes(b'then')
    world.add_storage_snapshots()
    secrets = [ONTAP_PASSWORD, ONTAP_B_PASSWORD, PVE_PASSWORD, 'token-Secr3t-value', 'PVEAuthCookie',
               'CSRFPreventionToken', 'Authorization', 'Basic ']
    outputs = []
    for argv in EVERY_COMMAND:
        result = world.run('-loglevel', 'debug', *argv)
        outputs.append(result.out + result.err)
        assert result.code == (1 if 999 in argv or 'nope' in argv else 0), result.err
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {PVE_USER}\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-Secr3t-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')
    result = world.run('-loglevel', 'debug', 'vm', 'list', '-vm', 100)
    outputs.append(result.out + result.err)
    text = '\n'.join(outputs)
    assert 'ONTAP GET' in text and 'PVE GET' in text
    for secret in secrets:
        assert secret not in text


def test_warns_when_config_is_readable_by_others(world):
    os.chmod(world.config, 0o644)
    result = world.run('storage', 'list', '-storage', 'ONTAP01')
    assert result.code == 0
    assert f'WARNING: {world.config} is readable by group or others (mode 644) and holds passwords: chmod 600' \
        in result.err


def test_debug_shows_the_traceback_and_every_request_but_no_secret(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    result = world.run('-loglevel', 'debug', 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'nope')

    assert result.code == 1
    assert 'Traceback' in result.err
    assert f'ONTAP GET /api/storage/volumes/{world.vol1.uuid}/snapshots -> 200' in result.err
    assert 'PVE GET /api2/json/storage -> 200' in result.err
    assert 'PVE POST /api2/json/access/ticket -> 200' in result.err
    for secret in (ONTAP_PASSWORD, PVE_PASSWORD, 'Basic ', 'PVEAuthCookie', 'CSRFPreventionToken'):
        assert secret not in result.err
