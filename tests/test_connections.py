"""The connections to PVE and to each ONTAP cluster, for every command: a wrong password, a host
that refuses, stays silent or answers too slowly, an untrusted certificate, a proxy: one line on
stderr, a non-zero exit, nothing changed. Reads retried, an expired ticket renewed once, one login
a run; an API token or a client certificate instead of a password. Where the credentials may go is
test_security.py's."""

import pytest
from world import OLD_SNAPSHOT, ONTAP_PASSWORD, PVE_PASSWORD, PVE_USER, closed_port, fails_cleanly, silent_port

EVERY_COMMAND = [
    ('vm', 'create', '-vm', 100, '-suspend'),
    ('storage', 'create', '-storage', 'ONTAP01'),
    ('storage', 'list', '-storage', 'ONTAP01'),
    ('storage', 'show', '-storage', 'ONTAP01'),
    ('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
    ('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
]


# -- a connection that fails

@pytest.mark.parametrize('argv', EVERY_COMMAND, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_wrong_ontap_password(world, argv):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = wrong\nverify = {world.a.cafile}\n')
    fails_cleanly(world, argv, 1, f'ONTAP {world.a.host}: authentication failed for user admin',
                  '[ONTAP01]')


@pytest.mark.parametrize('argv', EVERY_COMMAND, ids=lambda argv: ' '.join(map(str, argv[:2])))
def test_wrong_pve_password(world, argv):
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = wrong\nproxmox_verify = {world.pve_cafile}\n')
    fails_cleanly(world, argv, 1, 'login as root@pam failed')


def test_unreachable_ontap(world):
    port = closed_port()
    world.write_config(ONTAP01=f'host = 127.0.0.1:{port}\nuser = admin\npass = {ONTAP_PASSWORD}\n')
    fails_cleanly(world, ('storage', 'create', '-storage', 'ONTAP01'), 1,
                  f'ONTAP 127.0.0.1:{port}', 'Connection refused')


def test_unreachable_pve(world):
    port = closed_port()
    world.write_config(proxmox=f'proxmox_host = 127.0.0.1:{port}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n')
    fails_cleanly(world, ('vm', 'create', '-vm', 100), 1, f'Proxmox 127.0.0.1:{port}: login',
                  'Connection refused')


def test_a_silent_ontap_host_fails_after_the_connect_timeout(world):
    with silent_port() as port:
        world.write_config(ONTAP01=f'host = 127.0.0.1:{port}\nuser = admin\npass = {ONTAP_PASSWORD}\n',
                           defaults='connect_timeout = 0.2\nread_timeout = 30\n')
        fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1, f'ONTAP 127.0.0.1:{port}',
                      'no connection within 0.2 s (connect_timeout)')


def test_a_silent_pve_host_fails_after_the_connect_timeout(world):
    with silent_port() as port:
        world.write_config(proxmox=f'proxmox_host = 127.0.0.1:{port}\nproxmox_user = root@pam\n'
                                   f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n',
                           defaults='connect_timeout = 0.2\nread_timeout = 3\n')
        fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1, f'Proxmox 127.0.0.1:{port}',
                      'no connection within 0.2 s (connect_timeout)')


def test_a_slow_answer_fails_after_the_read_timeout(world):
    world.write_config(defaults='read_timeout = 0.3\n')
    world.a.latency = 1
    fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1,
                  'no answer within 0.3 s (read_timeout)')


def test_untrusted_ontap_certificate(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = true\n')
    fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 1,
                  'TLS certificate verification failed')


def test_a_proxy_in_the_environment_is_still_used_and_no_proxy_still_bypasses_it(world, monkeypatch):
    # The environment is read once per run (settle_environment), no longer on every call.
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    ontap = f'localhost:{world.a.port}'
    world.write_config(ONTAP01=f'host = {ontap}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = {world.a.cafile}\n')
    monkeypatch.setenv('HTTPS_PROXY', f'http://127.0.0.1:{closed_port()}')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')      # PVE (127.0.0.1) bypasses it, ONTAP (localhost) does not

    through_it = world.run('storage', 'list', '-storage', 'ONTAP01')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    bypassed = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert through_it.code == 1 and through_it.err.splitlines()[-1].startswith(f'ERROR: ONTAP {ontap}: ')
    assert bypassed.code == 0, bypassed.err


def test_a_proxy_in_the_environment_that_cannot_be_used_is_one_error_line_naming_the_host(world, monkeypatch):
    ontap = f'localhost:{world.a.port}'
    world.write_config(ONTAP01=f'host = {ontap}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = {world.a.cafile}\n')
    monkeypatch.setenv('HTTPS_PROXY', 'ftp://127.0.0.1:1')      # a scheme urllib3 cannot proxy through

    fails_cleanly(world, ['vm', 'list', '-vm', 100], 1,
                  f'ERROR: Proxmox {world.pve_host}: the proxy the environment names for it cannot be used')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')                 # PVE bypasses it, ONTAP does not
    fails_cleanly(world, ['storage', 'list', '-storage', 'ONTAP01'], 1,
                  f'ERROR: ONTAP {ontap}: the proxy the environment names for it cannot be used')


def test_one_pve_login_per_run(world):
    assert world.run('vm', 'create', '-vm', 100, '-suspend').code == 0
    assert world.logins() == 1


# -- faults on the way

def test_reads_are_retried_after_503_and_a_reset_connection(world):
    world.a.fail('GET', r'^/api/storage/volumes$', status=503, code='7', message='busy', times=2)
    world.a.drop('GET', r'/snapshots$', times=1)
    world.add_storage_snapshots()

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


def token_config(world, value, password=None):
    world.pve.apitokens['root@pam!backup'] = 'token-Secr3t-value'
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               + (f'proxmox_pass = {password}\n' if password else '')
                               + f'proxmox_token_name = backup\nproxmox_token_value = {value}\n'
                               f'proxmox_verify = {world.pve_cafile}\n')


def test_a_token_next_to_a_password_is_used_and_the_password_said_to_be_ignored(world):
    token_config(world, 'token-Secr3t-value', password='an-old-password')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert result.err.splitlines()[0] == (f'WARNING: {world.config}: [proxmox] has proxmox_token_name and '
                                          'proxmox_pass: the API token is used, proxmox_pass is ignored')
    assert world.logins() == 0
    assert len(world.vol1.snapshots) == 1


def test_a_refused_token_says_to_check_the_token_not_the_password(world):
    token_config(world, 'a-wrong-value', password='an-old-password')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 1
    (error,) = [line for line in result.err.splitlines() if line.startswith('ERROR:')]
    assert error == (f'ERROR: Proxmox {world.pve_host}: read the storage configuration: API token root@pam!backup '
                     'refused (check proxmox_user, proxmox_token_name and proxmox_token_value)')
    assert 'a-wrong-value' not in result.err and 'an-old-password' not in result.err
    assert not world.vol1.snapshots
