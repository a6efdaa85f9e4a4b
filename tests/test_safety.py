"""Safe under faults and in the wrong hands: guarded restore, busy snapshots, dry runs, mounts
that clean up, locks, faults on both sides, tokens and certificates, no leaked secrets."""

import os
import re
import types

import pytest
from fakepve import TaskError
from world import (
    FILE_CLONE,
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    PVE_USER,
    add_storage_snapshots,
    cloning,
    error_lines,
)

import pve_ontap_snapshot as tool

# -- storage restore


# -- busy snapshots


# -- dry run

DRY_RUNS = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 1),
    ('vm', 'restore', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('vm', 'delete', '-vm', 101, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('storage', 'create', '-storage', 'ONTAP01', '-keep', 1),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
]


@pytest.mark.parametrize('argv', DRY_RUNS, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_dry_run_prints_the_plan_and_changes_nothing(world, argv):
    add_storage_snapshots(world)
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    world.pve.vm(100).status = 'stopped' if argv[1] == 'restore' else 'running'
    before = world.state()

    result = world.run('-dry-run', *argv)

    assert result.code == 0, result.err
    assert 'INFO' not in result.err
    planned = [line for line in result.out.splitlines() if line.startswith('would ')]
    assert planned, result.out
    assert world.state() == before
    assert not world.ontap_changes()
    assert not world.pve_changes()


def test_dry_run_of_vm_create_names_each_step(world):
    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-dry-run')
    lines = [line for line in result.out.splitlines() if line.startswith('would ')]
    steps = [re.sub(r'snapshot-\S+$', 'snapshot-', ' '.join(line.split()[1:3]).split('pve_ontap_capture_')[0])
             for line in lines]
    assert steps == (['suspend VM', 'create snapshot', 'create snapshot', 'start VM'] + ['file-clone .snapshot/'] * 6
                     + ['delete snapshot', 'delete snapshot', 'write images/100/vm-100-snapshot-', 'register the'])
    assert lines[0] == f'would suspend VM 100 (Proxmox {world.pve_host})'
    capture = re.search(r'pve_ontap_capture_\S+_vm100', lines[1])[0]
    assert lines[4].startswith(f'would file-clone .snapshot/{capture}/images/100/')
    assert lines[-1].startswith('would register the snapshot as unused disks (VM 100)')


def test_dry_run_with_keep_shows_what_retention_would_delete(world):
    add_storage_snapshots(world)
    old_set = world.disk(world.vol1, 101, 'vm-101-disk-0-snapshot-2024-03-11_10:00:00+0000.raw')
    old_set.write_bytes(b'an old VM snapshot')
    before = world.state()

    vm = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    storage = world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01', '-keep', 2)

    assert vm.code == 0 and storage.code == 0, vm.err + storage.err
    assert f'would delete images/101/{old_set.name} in volume proxmox_storage01' in vm.out
    deleted = [line for line in storage.out.splitlines() if line.startswith('would delete snapshot')]
    assert deleted == [f'would delete snapshot {OLD_SNAPSHOT} of volume proxmox_storage01 (ONTAP {world.a.host})']
    assert world.state() == before


# -- mounts

def test_an_ha_vm_whose_stop_outlasts_the_wait_is_asked_to_start_again(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 50     # HA acts 0.5 s after its request
    world.write_config(defaults='task_timeout = 0.1\n')

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 1
    assert 'the HA manager has not made it stopped after 0.1 s (task_timeout)' in result.err
    assert world.power_actions()[:2] == ['shutdown', 'start']
    assert not world.ontap_changes(on=world.a)


# -- faults

def test_reads_are_retried_after_503_and_a_reset_connection(world):
    world.a.fail('GET', r'^/api/storage/volumes$', status=503, code='7', message='busy', times=2)
    world.a.drop('GET', r'/snapshots$', times=1)
    add_storage_snapshots(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert OLD_SNAPSHOT in result.out


@pytest.mark.parametrize('fault', ['drop', 'fail'])
def test_a_failed_clone_post_is_not_repeated_and_leaves_nothing(world, fault):
    match = cloning('images/100/vm-100-disk-2.qcow2')
    if fault == 'drop':
        world.a.drop('POST', '/api/storage/file/clone', match=match)
    else:
        world.a.fail('POST', '/api/storage/file/clone', status=500, code='1', message='internal error', match=match)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'scsi0 (' in line and 'removed the 5 clone(s)' in line
    posts = [r for r in world.ontap_requests(path=FILE_CLONE) if match(r['body'])]
    assert len(posts) == 1
    assert world.state() == before


def test_a_job_slower_than_its_bound_fails_and_names_the_clone(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 3, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'still running after 1 s (job_timeout)' in line
    assert 'to images/100/vm-100-disk-0-snapshot-' in line
    assert world.pve.vm(100).status == 'running'


def failing_suspend(pve):
    async def _do_suspend(self, vm, user, params):
        async def body():
            raise TaskError('VM 100 qmp command savevm-start failed - timeout')
        return await self.task(vm.node, 'qmsuspend', vm.vmid, user, body, vm=vm)
    pve._do_suspend = types.MethodType(_do_suspend, pve)


def test_a_failed_suspend_task_leaves_the_vm_running_and_nothing_cloned(world):
    failing_suspend(world.pve)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: suspend VM 100: task qmsuspend failed: VM 100 '
                                   'qmp command savevm-start failed - timeout')]
    assert world.state() == before
    assert not world.ontap_requests('POST')


def test_a_failed_start_task_says_the_vm_is_stopped(world):
    world.pve.vm(100).start_error = 'kvm: -drive file=/mnt/pve/ONTAP01/images/100/vm-100-disk-0.raw: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but VM 100 could not be started again '
                    'after', line)
    assert 'start it by hand' in line and 'Permission denied' in line
    # the snapshot itself is complete and kept
    assert len(world.clones(world.vol1, 100)) == 4


def test_a_failed_clone_and_a_failed_start_are_both_reported_and_the_clones_removed(world):
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match=cloning('images/100/vm-100-disk-0.raw'))
    world.pve.vm(100).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'removed the 5 clone(s) made before' in line
    assert 'and VM 100 could not be started again' in line and 'start it by hand' in line
    assert not [f for vol in (world.vol1, world.vol2) for f in world.clones(vol, 100)]


def test_shutdown_of_an_ha_vm_waits_until_ha_has_stopped_it_and_started_it(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 10     # HA acts 0.1 s after its task ended
    status_at = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and status_at.append((r['path'].rsplit('/', 1)[1], vm.status))

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 0, result.err
    # the capture snapshots while HA has the VM stopped, the clones once HA runs it again
    assert sorted(status_at) == [('clone', 'running')] * 6 + [('snapshots', 'stopped')] * 2 + [
        (name, 'running') for name in sorted(world.records(world.vol1, 100))]
    assert vm.status == 'running'
    assert world.power_actions() == ['shutdown', 'start']


def test_suspend_of_an_ha_vm_is_refused_before_anything_changes(world):
    world.pve.vm(100).ha_state = 'started'
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: VM 100 is managed by HA, and PVE does not suspend such a VM to disk: '
                                   'use -pause, -shutdown or -freeze')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_a_locked_vm_is_refused_before_anything_changes(world):
    world.pve.snapshot_lock(100, 'backup')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'suspend VM 100' in line and 'locked' in line
    assert world.state() == before


def test_an_expired_ticket_is_renewed_once(world):
    revoked = []

    def revoke(record):
        if record['path'] == '/api/storage/file/clone' and not revoked:
            revoked.append(True)
            world.pve.revoke_tickets()
    world.a.on_request = revoke

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 0, result.err
    assert world.pve.vm(100).status == 'running'
    assert world.logins() == 2


# -- credentials

def test_pve_api_token_instead_of_a_password(world):
    world.pve.apitokens[f'{PVE_USER}!backup'] = 'token-Secr3t-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {PVE_USER}\n'
                               'proxmox_token_name = backup\nproxmox_token_value = token-Secr3t-value\n'
                               f'proxmox_verify = {world.pve_cafile}\n')

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 0, result.err
    assert world.logins() == 0
    assert world.pve.vm(100).status == 'running'


def test_ontap_client_certificate_instead_of_a_password(world):
    certfile, keyfile = world.a.cert_user('admin')
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\ncert = {certfile}\nkey = {keyfile}\n'
                               f'verify = {world.a.cafile}\n')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert len(world.vol1.snapshots) == 1


OLD_SET = '2024-03-11_10:00:00+0000'
EVERY_COMMAND = [
    ('vm', 'create', '-vm', 100, '-suspend', '-keep', 2), ('vm', 'list', '-vm', 100),
    ('vm', 'create', '-vm', 101), ('vm', 'delete', '-vm', 100, '-snapshot', '2024-03-11_10:00:00+0000'),
    ('storage', 'create', '-storage', 'ONTAP01'), ('storage', 'list', '-storage', 'ONTAP01'),
    ('storage', 'show', '-storage', 'ONTAP02'), ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'unmount', '-storage', 'ONTAP01-CLONE'),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT, '-force', '-yes'),
    ('vm', 'create', '-vm', 999), ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'nope'),
    ('vm', 'create', '-all', '-freeze', '-keep', 3), ('vm', 'restore', '-vm', 101, '-snapshot', OLD_SET, '-yes'),
    ('vm', 'restore', '-vm', 101, '-storage-snapshot', MARCH_SNAPSHOT, '-yes'),
]


def test_no_secret_in_any_output_even_at_debug(world):
    world.pve.apitokens[f'{PVE_USER}!backup'] = 'token-Secr3t-value'
    world.with_agent(100)
    for vmid in (100, 101):
        world.disk(world.vol1, vmid, f'vm-{vmid}-disk-0-snapshot-{OLD_SET}.raw').write_bytes(b'then')
    add_storage_snapshots(world)
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


@pytest.mark.parametrize('host, local', [('localhost', True), ('127.0.0.1:8006', True), ('[::1]:8006', True),
                                         ('pve1', True), ('pve1.example.org:8006', True), ('pve2', False),
                                         ('192.0.2.10', False)])
def test_is_local_host(host, local):
    assert tool.ConfigFile.is_local_host(host, 'pve1.example.org') is local


def test_verify_defaults_to_the_cluster_ca_on_the_node(tmp_path, monkeypatch):
    ca = tmp_path / 'pve-root-ca.pem'
    monkeypatch.setattr(tool.ConfigFile, 'PVE_ROOT_CA', str(ca))
    assert tool.ConfigFile.default_pve_verify('localhost:8006') is True
    ca.write_text('x')
    assert tool.ConfigFile.default_pve_verify('localhost:8006') == str(ca)
    assert tool.ConfigFile.default_pve_verify('192.0.2.10') is True
