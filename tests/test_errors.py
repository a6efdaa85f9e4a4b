"""Bad input and unreachable servers: one line on stderr, a non-zero exit, nothing changed."""

import pytest
from world import ONTAP_PASSWORD, PVE_PASSWORD, closed_port, silent_port

import pve_ontap_snapshot as tool

OLD = 'proxmox_snapshot_2024-03-13_14:42:47+0000'


def assert_fails_cleanly(world, argv, code, *phrases):
    """Run argv; it must fail with `code`, one stderr line holding every phrase, no change."""
    before = world.state()
    result = world.run(*argv)
    assert result.code == code, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith('ERROR: ')
    for phrase in phrases:
        assert phrase in result.err
    assert 'Traceback' not in result.err and result.out == ''
    assert world.state() == before
    return result


EVERY_COMMAND = [
    ('vm', 'create', '-vm', 100, '-suspend'),
    ('storage', 'create', '-storage', 'ONTAP01'),
    ('storage', 'list', '-storage', 'ONTAP01'),
    ('storage', 'show', '-storage', 'ONTAP01'),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD),
    ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD),
]


def test_unknown_vm(world):
    assert_fails_cleanly(world, ('vm', 'create', '-vm', 999), 1, 'no VM 999')


def test_unknown_storage(world):
    world.write_config(NOPE=f'host = {world.a.host}\nuser = admin\npass = x\n')
    assert_fails_cleanly(world, ('storage', 'list', '-storage', 'NOPE'), 1, 'no storage NOPE')


def test_storage_without_config_section(world):
    assert_fails_cleanly(world, ('storage', 'create', '-storage', 'local-lvm'), 2,
                         f'{world.config}: no section [local-lvm]')


def test_storage_that_is_not_nfs(world):
    world.write_config(**{'local-lvm': f'host = {world.a.host}\nuser = admin\npass = x\n'})
    assert_fails_cleanly(world, ('storage', 'create', '-storage', 'local-lvm'), 1,
                         'storage local-lvm is of type lvmthin, not NFS')


@pytest.mark.parametrize('argv', EVERY_COMMAND, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_wrong_ontap_password(world, argv):
    world.a.add_snapshot('proxmox_storage01', OLD)
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = wrong\nverify = {world.a.cafile}\n')
    assert_fails_cleanly(world, argv, 1, f'ONTAP {world.a.host}: authentication failed for user admin',
                         '[ONTAP01]')


@pytest.mark.parametrize('argv', EVERY_COMMAND, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_wrong_pve_password(world, argv):
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = wrong\nproxmox_verify = {world.pve_cafile}\n')
    assert_fails_cleanly(world, argv, 1, 'login as root@pam failed')


def test_unreachable_ontap(world):
    port = closed_port()
    world.write_config(ONTAP01=f'host = 127.0.0.1:{port}\nuser = admin\npass = {ONTAP_PASSWORD}\n')
    assert_fails_cleanly(world, ('storage', 'create', '-storage', 'ONTAP01'), 1,
                         f'ONTAP 127.0.0.1:{port}', 'Connection refused')


def test_unreachable_pve(world):
    port = closed_port()
    world.write_config(proxmox=f'proxmox_host = 127.0.0.1:{port}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n')
    assert_fails_cleanly(world, ('vm', 'create', '-vm', 100), 1, f'Proxmox 127.0.0.1:{port}: login',
                         'Connection refused')


def test_a_silent_ontap_host_fails_after_the_connect_timeout(world):
    with silent_port() as port:
        world.write_config(ONTAP01=f'host = 127.0.0.1:{port}\nuser = admin\npass = {ONTAP_PASSWORD}\n',
                           defaults='connect_timeout = 0.2\nread_timeout = 30\n')
        assert_fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1, f'ONTAP 127.0.0.1:{port}',
                             'no connection within 0.2 s (connect_timeout)')


def test_a_silent_pve_host_fails_after_the_connect_timeout(world):
    with silent_port() as port:
        world.write_config(proxmox=f'proxmox_host = 127.0.0.1:{port}\nproxmox_user = root@pam\n'
                                   f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n',
                           defaults='connect_timeout = 0.2\nread_timeout = 3\n')
        assert_fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1, f'Proxmox 127.0.0.1:{port}',
                             'no connection within 0.2 s (connect_timeout)')


def test_a_slow_answer_fails_after_the_read_timeout(world):
    world.write_config(defaults='read_timeout = 0.3\n')
    world.a.latency = 1
    assert_fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1,
                         'no answer within 0.3 s (read_timeout)')


def test_untrusted_ontap_certificate(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = true\n')
    assert_fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1,
                         'TLS certificate verification failed')


@pytest.mark.parametrize('command', ['delete', 'restore', 'mount'])
def test_unknown_snapshot(world, command):
    assert_fails_cleanly(world, ('storage', command, '-storage', 'ONTAP01', '-snapshot', OLD), 1,
                         f'volume proxmox_storage01 has no snapshot {OLD}')


def test_malformed_config(world):
    world.config.write_text('[proxmox\nproxmox_host = x\n')
    assert_fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 2, str(world.config), 'malformed')


def test_missing_config_file(world, tmp_path, capsys):
    before = world.state()
    code = tool.main(['-config', str(tmp_path / 'nowhere.ini'), 'storage', 'list', '-storage', 'ONTAP01'])
    assert code == 2 and capsys.readouterr().err.strip() == f'ERROR: config file {tmp_path}/nowhere.ini not found'
    assert world.state() == before


def test_usage_errors_exit_2(world):
    with pytest.raises(SystemExit) as exit_:
        world.run('vm', 'create', '-vm', 'abc')
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        world.run('vm', 'create', '-vm', 100, '-suspend', '-shutdown')
    assert exit_.value.code == 2


def test_debug_shows_the_traceback_and_every_request_but_no_secret(world):
    world.a.add_snapshot('proxmox_storage01', OLD)
    result = world.run('-loglevel', 'debug', 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'nope')

    assert result.code == 1
    assert 'Traceback' in result.err
    assert f'ONTAP GET /api/storage/volumes/{world.vol1.uuid}/snapshots -> 200' in result.err
    assert 'PVE GET /api2/json/storage -> 200' in result.err
    assert 'PVE POST /api2/json/access/ticket -> 200' in result.err
    for secret in (ONTAP_PASSWORD, PVE_PASSWORD, 'Basic ', 'PVEAuthCookie', 'CSRFPreventionToken'):
        assert secret not in result.err


def test_a_proxy_in_the_environment_is_still_used_and_no_proxy_still_bypasses_it(world, monkeypatch):
    # The environment is read once per run (settle_environment), no longer on every call.
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-13_14:42:47+0000')
    ontap = f'localhost:{world.a.port}'
    world.write_config(ONTAP01=f'host = {ontap}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = {world.a.cafile}\n')
    monkeypatch.setenv('HTTPS_PROXY', f'http://127.0.0.1:{closed_port()}')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')      # PVE (127.0.0.1) bypasses it, ONTAP (localhost) does not

    through_it = world.run('storage', 'list', '-storage', 'ONTAP01')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    bypassed = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert through_it.code == 1 and through_it.err.splitlines()[-1].startswith(f'ERROR: ONTAP {ontap}: ')
    assert bypassed.code == 0, bypassed.err
