"""config.ini: where it is found, how it is read (a byte order mark, %% for %, no value quoted in
an error), what its sections and keys may say, and what a -storage may name: a section of its
own that PVE has as an NFS storage. Who may change it is test_security.py's."""

import pytest
from world import OLD_SNAPSHOT, fails_cleanly

import pve_ontap_snapshot as tool

# -- reading it

def test_original_config_reads_unchanged(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('x')
    path = tmp_path / 'config.ini'
    path.write_text('[proxmox]\nproxmox_host = 172.16.60.128\nproxmox_user = root@pam\n'
                    'proxmox_pass = SuPeRs3cr3t\nproxmox_verify = false\n\n'
                    '[ONTAP01]\nhost = 192.168.38.50\nuser = admin\npass = SuPeRs3cr3t\nverify = false\n\n'
                    f'[BACKUP01]\nhost = 192.168.38.51:8443\nuser = admin\npass = p%%ss\nverify = {ca}\n')
    config = tool.ConfigFile.read(str(path))
    assert config.proxmox.verify is False and config.proxmox.host == '172.16.60.128'
    assert sorted(config.storages) == ['BACKUP01', 'ONTAP01']
    assert config.storages['BACKUP01'].password == 'p%ss'
    assert config.storages['BACKUP01'].verify == str(ca)
    assert config.ontap_for('ONTAP01-CLONE') is config.storages['ONTAP01']
    assert config.timeouts == tool.Timeouts()
    assert 'SuPeRs3cr3t' not in repr(config)


def test_config_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tool.ConfigError, match='none of config.ini, /etc/pve-ontap-snapshot/config.ini'):
        tool.ConfigFile.find(None)
    (tmp_path / 'config.ini').write_text('')
    assert tool.ConfigFile.find(None) == 'config.ini'
    with pytest.raises(tool.ConfigError, match='config file /nowhere.ini not found'):
        tool.ConfigFile.find('/nowhere.ini')


@pytest.mark.parametrize('text, phrase', [
    ('[ONTAP01]\nhost = x\n', 'no [proxmox] section'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\n', '[proxmox] lacks proxmox_pass'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\n[S]\nhost = h\nuser = u\n',
     '[S] lacks pass'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\nproxmox_verify = /no/such/ca.pem\n',
     'neither true/false nor an existing CA file'),
    ('this is not ini\n', 'malformed: line 1 comes before the first [section]'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = 50%off\n', 'write %% for a literal %'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\n[defaults]\njob_timeout = soon\n',
     'job_timeout = soon: not a positive number'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\n[defaults]\nread_timeout = 0\n',
     'read_timeout = 0: not a positive number'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\n[defaults]\ntask_timeout = nan\n',
     'task_timeout = nan: not a positive number'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = p\n[defaults]\njob_timeout = -inf\n',
     'job_timeout = -inf: not a positive number'),
])
def test_bad_config_names_file_and_key(tmp_path, text, phrase):
    path = tmp_path / 'config.ini'
    path.write_text(text)
    with pytest.raises(tool.ConfigError) as failure:
        tool.ConfigFile.read(str(path))
    assert phrase in str(failure.value) and str(path) in str(failure.value)


@pytest.mark.parametrize('text, phrase', [
    ('proxmox_pass = 0ff%Secret\n[proxmox]\n', 'line 1 comes before the first [section]'),
    ('[proxmox]\nproxmox_host = h\n0ff%Secret\n', 'line 3 is neither [section] nor key = value'),
    ('[proxmox]\nproxmox_host = h\nproxmox_user = u\nproxmox_pass = 0ff%Secret\n', '[proxmox] proxmox_pass'),
    ('[proxmox]\nproxmox_pass = 0ff%%Secret\nproxmox_pass = 0ff%%Secret\n', '[proxmox] sets proxmox_pass twice'),
])
def test_config_errors_never_quote_a_value(tmp_path, text, phrase):
    path = tmp_path / 'config.ini'
    path.write_text(text)
    with pytest.raises(tool.ConfigError) as failure:
        tool.ConfigFile.read(str(path))
    assert phrase in str(failure.value) and 'Secret' not in str(failure.value)


def test_malformed_config(world):
    world.config.write_text('[proxmox\nproxmox_host = x\n')
    fails_cleanly(world, ('storage', 'list', '-storage', 'ONTAP01'), 2, str(world.config), 'malformed')


def test_missing_config_file(world, tmp_path, capsys):
    before = world.state()
    code = tool.main(['-config', str(tmp_path / 'nowhere.ini'), 'storage', 'list', '-storage', 'ONTAP01'])
    assert code == 2 and capsys.readouterr().err.strip() == f'ERROR: config file {tmp_path}/nowhere.ini not found'
    assert world.state() == before


def test_a_directory_as_config_is_named_a_directory(world, capsys):
    before = world.state()

    code = tool.main(['-config', str(world.dir), 'storage', 'list', '-storage', 'ONTAP01'])

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f'ERROR: config file {world.dir} is a directory: give the file in it (-config {world.config})']
    assert world.state() == before


def test_a_config_saved_by_notepad_with_a_byte_order_mark_is_read(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.config.write_bytes(b'\xef\xbb\xbf' + world.config.read_bytes())

    result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert OLD_SNAPSHOT in result.out


def test_storage_completes_from_a_config_with_a_byte_order_mark(tmp_path):
    config = tmp_path / 'config.ini'
    config.write_bytes(b'\xef\xbb\xbf[proxmox]\nproxmox_host = pve1\n[ONTAP01]\nhost = cluster1\n')
    assert tool.complete_storage('', tool.Options(config=str(config))) == ['ONTAP01', 'ONTAP01-CLONE']


# -- what its sections may say

@pytest.mark.parametrize('scheme', ['https://', 'http://', 'HTTPS://'])
def test_a_url_as_proxmox_host_says_to_write_the_host_alone(world, scheme):
    world.write_config(proxmox=f'proxmox_host = {scheme}root:pve-Secr3t@{world.pve_host}/\n'
                               'proxmox_user = root@pam\nproxmox_pass = pve-Secr3t\n')

    result = world.run('storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 2
    assert result.err == (f'ERROR: {world.config}: [proxmox] proxmox_host starts with {scheme}: write the host '
                          'alone, optionally with :port (like 192.168.38.50 or 192.168.38.50:8006)\n')
    assert not world.pve.requests


def test_a_url_as_ontap_host_names_the_section_and_no_password(world):
    world.write_config(ONTAP02=f'host = https://admin:ontap-Secr3t-B@{world.b.host}\nuser = admin\n'
                               'pass = ontap-Secr3t-B\n')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 2
    assert result.err.startswith(f'ERROR: {world.config}: [ONTAP02] host starts with https://: write the host alone')
    assert 'Secr3t' not in result.err
    assert not world.vol1.snapshots and not world.a.requests and not world.b.requests


def test_a_snapmirror_label_in_the_config_is_checked_as_label_is(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = x\nverify = {world.a.cafile}\n'
                               'snapmirror_label = two words\n')
    result = world.run('storage', 'create', '-storage', 'ONTAP01')
    assert result.code == 2 and world.vol1.snapshots == {}
    assert result.err.strip() == (f'ERROR: {world.config}: [ONTAP01] snapmirror_label = two words: no snapmirror label '
                                  '(1 to 31 characters, no blanks)')


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


# -- what -storage may name

@pytest.mark.parametrize('section, holds', [('proxmox', 'the PVE API login'), ('defaults', 'timeouts')])
def test_config_sections_of_its_own_are_no_storage(world, section, holds):
    world.write_config(defaults='job_timeout = 60\n')

    line = world.usage_error('storage', 'create', '-storage', section)

    assert line.endswith(f"argument -storage/--storage: '{section}' is no storage: [{section}] in config.ini "
                         f'holds {holds}, not the ONTAP cluster of a storage')
    assert not world.pve.requests


def test_unknown_storage(world):
    world.write_config(NOPE=f'host = {world.a.host}\nuser = admin\npass = x\n')
    fails_cleanly(world, ('storage', 'list', '-storage', 'NOPE'), 1, 'no storage NOPE')


def test_storage_without_config_section(world):
    fails_cleanly(world, ('storage', 'create', '-storage', 'local-lvm'), 2,
                  f'{world.config}: no section [local-lvm]')


def test_storage_that_is_not_nfs(world):
    world.write_config(**{'local-lvm': f'host = {world.a.host}\nuser = admin\npass = x\n'})
    fails_cleanly(world, ('storage', 'create', '-storage', 'local-lvm'), 1,
                  'storage local-lvm is of type lvmthin, not NFS')
