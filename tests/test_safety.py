"""Safe under faults and in the wrong hands: guarded restore, busy snapshots, dry runs, mounts
that clean up, locks, faults on both sides, tokens and certificates, no leaked secrets."""

import os

import pytest
from world import (
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    PVE_USER,
    add_storage_snapshots,
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


# -- faults

def test_reads_are_retried_after_503_and_a_reset_connection(world):
    world.a.fail('GET', r'^/api/storage/volumes$', status=503, code='7', message='busy', times=2)
    world.a.drop('GET', r'/snapshots$', times=1)
    add_storage_snapshots(world)

    result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert OLD_SNAPSHOT in result.out


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
