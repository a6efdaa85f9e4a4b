"""pve-ontap-snapshot doctor: the setup proves itself. A healthy world passes every check;
each way the world can be broken shows as the one line that says so, with its fix; doctor
changes nothing (unless -try, which removes what it made) and never prints a secret."""

import json
import os
import re
import time
from pathlib import Path

import pytest
from world import (
    FILE_CLONE,
    ONTAP_B_PASSWORD,
    ONTAP_PASSWORD,
    PVE_PASSWORD,
    closed_port,
    hold_cluster_lock,
    kill_while_paused,
    pve_reads_nfs_directories,
    readme_role,
    write_lock_record,
)

import pve_ontap_snapshot as tool

PACKAGING = Path(__file__).resolve().parent.parent / 'packaging'
SNAP_USER, SNAP_PASSWORD = 'snap@pve', 'snap-Secr3t'
# What the README's least-privilege role holds on PVE 9.
VM_CONFIG = ('VM.Config.CPU', 'VM.Config.Memory', 'VM.Config.Network', 'VM.Config.HWType', 'VM.Config.Options',
             'VM.Config.CDROM', 'VM.Config.Cloudinit')
ROLE = {'/': ('Sys.Audit',),
        '/vms': ('VM.Audit', 'VM.PowerMgmt', 'VM.Config.Disk', 'VM.GuestAgent.Audit', 'VM.GuestAgent.FileSystemMgmt',
                 'VM.Allocate', *VM_CONFIG),
        '/storage': ('Datastore.Allocate', 'Datastore.AllocateSpace', 'Datastore.Audit'),
        '/sdn/zones': ('SDN.Use',)}


def doctor(world, *argv):
    """Run doctor; never a secret or a traceback in what it prints. (result, {check: line})."""
    result = world.run('doctor', *argv)
    for secret in (PVE_PASSWORD, ONTAP_PASSWORD, ONTAP_B_PASSWORD, SNAP_PASSWORD):
        assert secret not in result.out + result.err
    assert 'Traceback' not in result.err
    lines = {}
    for line in result.out.splitlines()[:-1]:
        status, rest = line.split(None, 1)
        lines[rest.split(': ', 1)[0]] = (status, rest.split(': ', 1)[1])
    assert result.out.splitlines()[-1].startswith('summary: ')
    return result, lines


def only_reads(world):
    """Nothing but reads reached ONTAP or PVE (besides PVE's login)."""
    assert not world.ontap_changes() and not world.pve_changes()


def as_user(world, user=SNAP_USER, without=(), role=ROLE):
    """Log in as `user`, who holds the least-privilege role but `without` on every path."""
    world.pve.users[user] = SNAP_PASSWORD
    for path, privileges in role.items():
        world.pve.grant(user, path, *[p for p in privileges if p not in without])
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {user}\n'
                               f'proxmox_pass = {SNAP_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n')


def test_a_healthy_setup_passes_every_check_and_changes_nothing(world):
    before = world.state()

    result, lines = doctor(world)

    assert result.code == 0, result.out
    assert result.err == ''
    assert {status for status, _ in lines.values()} == {'ok'}
    assert result.out.splitlines()[-1] == f'summary: {len(lines)} ok, 0 warn, 0 fail'
    for check in ('config.ini', 'config [proxmox]', 'config [ONTAP01]', 'proxmox connection', 'proxmox login',
                  'proxmox release', 'proxmox cluster', 'proxmox nodes', 'privileges for vm create -freeze',
                  f'ONTAP {world.a.host} release', f'ONTAP {world.b.host} licences', 'ONTAP01 storage',
                  'ONTAP01 volume', 'ONTAP02 REST role', 'ONTAP02 volume state', 'ONTAP01 snapshots',
                  'ONTAP01 space', 'ONTAP01 snapshot autodelete', 'ONTAP01 snapshot policy', 'ONTAP02 mount'):
        assert check in lines
    assert 'mode 600' in lines['config.ini'][1]
    assert 'PVE 9' in lines['proxmox release'][1]
    assert lines['ONTAP01 volume'][1].startswith('proxmox_storage01 in SVM svm1')
    assert lines['ONTAP02 mount'][1].startswith('not checked')
    assert world.state() == before
    only_reads(world)


def test_json_gives_the_same_checks_as_a_list(world):
    _, lines = doctor(world)

    result = world.run('-output', 'json', 'doctor')

    assert result.code == 0
    checks = json.loads(result.out)
    assert [c['check'] for c in checks] == list(lines)
    assert all(set(c) == {'check', 'status', 'found', 'fix'} and c['status'] == 'ok' and c['fix'] is None
               for c in checks)


def test_json_of_a_broken_world_carries_the_fix(world):
    world.vol1.snapshot_autodelete = True
    world.pve.lose_quorum()

    result = world.run('-output', 'json', 'doctor')

    assert result.code == 1
    assert result.err.startswith('ERROR: doctor: 1 check(s) failed: proxmox cluster')
    by_check = {c['check']: c for c in json.loads(result.out)}
    assert by_check['proxmox cluster']['status'] == 'fail'
    assert by_check['ONTAP01 snapshot autodelete']['status'] == 'warn'
    assert by_check['ONTAP01 snapshot autodelete']['fix'] == ('volume snapshot autodelete modify -vserver svm1 '
                                                              '-volume proxmox_storage01 -enabled false')


def test_storage_limits_the_checks_to_one_storage(world):
    result, lines = doctor(world, '-storage', 'ONTAP02')

    assert result.code == 0
    assert not [check for check in lines if ('ONTAP01' in check or world.a.host in check)
                and not check.startswith('config [')]
    assert 'ONTAP02 volume' in lines
    assert world.a.requests == []


def test_a_storage_without_a_section(world):
    result, lines = doctor(world, '-storage', 'local-lvm')
    assert result.code == 1
    assert lines['config [local-lvm]'] == ('fail', (f'{world.config} has no section [local-lvm]; fix: add one with '
                                                   'host, user and pass of the ONTAP cluster that exports the storage'))


# -- config.ini

def test_a_config_readable_by_others_warns(world):
    os.chmod(world.config, 0o644)
    result, lines = doctor(world)
    assert result.code == 0
    assert lines['config.ini'][0] == 'warn'
    assert lines['config.ini'][1].endswith(f'group or others may read the passwords in it; fix: chmod 600 '
                                           f'{world.config}')


def test_every_incomplete_section_and_unknown_key_is_named(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\npass = {ONTAP_PASSWORD}\n',
                       ONTAP02=f'host = {world.b.host}\nuser = admin\npass = {ONTAP_B_PASSWORD}\nsmv = svm2\n')

    result, lines = doctor(world)

    assert result.code == 1
    assert lines['config [ONTAP01]'] == ('fail', 'lacks user; fix: add user to it (see config.ini.example)')
    assert lines['config [ONTAP02]'][0] == 'warn'
    assert 'ignored: smv (a typo?)' in lines['config [ONTAP02]'][1]
    assert 'proxmox connection' not in lines    # nothing checked with a config that read_config refuses
    assert result.err == 'ERROR: doctor: 1 check(s) failed: config [ONTAP01]\n'


def test_a_malformed_config_is_one_failed_check(world):
    world.config.write_text('[proxmox]\nproxmox_host\n')
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['config.ini'] == ('fail', (f'config file {world.config} is malformed: line 2 is neither [section] '
                                           'nor key = value; fix: correct that line (see config.ini.example)'))


def test_a_missing_config_is_one_failed_check(tmp_path, capsys):
    assert tool.main(['doctor', '-config', str(tmp_path / 'nope.ini')]) == 1
    out, err = capsys.readouterr()
    assert out == (f'fail  config.ini: config file {tmp_path / "nope.ini"} not found; fix: copy config.ini.example to '
                   '/etc/pve-ontap-snapshot/config.ini and fill it in\nsummary: 0 ok, 0 warn, 1 fail\n')
    assert err == 'ERROR: doctor: 1 check(s) failed: config.ini\n'


# -- PVE

def test_a_wrong_pve_password(world):
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = wrong\nproxmox_verify = {world.pve_cafile}\n')
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['proxmox connection'][0] == 'ok'
    assert lines['proxmox login'][0] == 'fail'
    assert 'login as root@pam failed (check proxmox_user and proxmox_pass)' in lines['proxmox login'][1]
    assert lines['ONTAP01 storage'] == ('warn', ('not checked: its export is known to PVE only; fix: see the proxmox '
                                                'checks'))
    assert lines[f'ONTAP {world.a.host} login'][0] == 'ok'


def test_an_untrusted_pve_certificate(world):
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = true\n')
    result, lines = doctor(world)
    assert result.code == 1
    status, text = lines['proxmox connection']
    assert status == 'fail' and 'TLS certificate verification failed' in text
    assert 'fix: set proxmox_verify to the CA that signed its certificate' in text
    assert 'proxmox login' not in lines


def test_an_unreachable_pve(world):
    port = closed_port()
    world.write_config(proxmox=f'proxmox_host = 127.0.0.1:{port}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {world.pve_cafile}\n')
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['proxmox connection'][0] == 'fail' and 'Connection refused' in lines['proxmox connection'][1]


@pytest.mark.filterwarnings('ignore::urllib3.exceptions.InsecureRequestWarning')
def test_unverified_tls_warns(world):
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = root@pam\n'
                               f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = false\n')
    result, lines = doctor(world)
    assert result.code == 0
    assert lines['proxmox connection'][0] == 'warn'
    assert 'its certificate NOT verified' in lines['proxmox connection'][1]


def test_a_node_offline_and_a_cluster_without_quorum(world):
    world.pve.set_node_offline('pve2')
    result, lines = doctor(world)
    assert result.code == 0
    assert lines['proxmox nodes'][0] == 'warn'
    assert lines['proxmox nodes'][1].startswith('pve2 offline (pve1 online): VMs there can be neither snapshotted')

    world.pve.lose_quorum()
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['proxmox cluster'] == ('fail', ('cluster fakecluster has no quorum: PVE refuses config changes and '
                                                'VM actions; fix: bring enough nodes back online (pvecm status)'))


def test_the_least_privilege_role_passes(world):
    role = readme_role(9)
    assert sorted(role) == sorted(p for privileges in ROLE.values() for p in privileges)   # ROLE is the README's
    as_user(world)
    result, lines = doctor(world)
    assert result.code == 0, result.out
    assert all(status == 'ok' for check, (status, _) in lines.items() if check.startswith('privileges'))
    for group in ('vm restore -as-new', 'vm restore -with-config', 'storage create'):
        assert lines[f'privileges for {group}'][0] == 'ok'
    assert lines['privileges for vm restore -as-new'][1] == (
        f'{SNAP_USER} holds VM.Audit, VM.Allocate, VM.Config.CPU, VM.Config.Memory, VM.Config.Network, '
        'VM.Config.HWType, VM.Config.Options, VM.Config.Disk on /vms; SDN.Use on /sdn/zones')


def test_a_missing_privilege_is_named_for_each_command_that_needs_it(world):
    as_user(world, without=('VM.PowerMgmt',))

    result, lines = doctor(world)

    assert result.code == 0     # only commands that need it are affected: warnings
    lacking = {check for check, (status, _) in lines.items() if status == 'warn'}
    assert lacking == {'privileges for vm create -suspend', 'privileges for vm create -shutdown, vm restore -shutdown',
                       'privileges for storage create -pause', 'privileges for ct create -shutdown, ct restore -shutdown'}
    assert lines['privileges for vm create -suspend'] == (
        'warn', (f'{SNAP_USER} lacks VM.PowerMgmt on /vms; fix: grant it if you use these commands (README, '
                'Least privilege)'))


def test_a_user_without_vm_allocate_is_warned_for_restore_as_new_only(world):
    as_user(world, without=('VM.Allocate',))

    result, lines = doctor(world)

    assert result.code == 0
    assert {check for check, (status, _) in lines.items() if status == 'warn'} == {'privileges for vm restore -as-new'}
    assert lines['privileges for vm restore -as-new'] == (
        'warn', (f'{SNAP_USER} lacks VM.Allocate on /vms; fix: grant it if you use these commands (README, '
                'Least privilege)'))


def test_a_user_who_may_not_use_the_bridges_is_warned_for_a_new_vm_and_a_restored_config(world):
    as_user(world, role={path: privileges for path, privileges in ROLE.items() if path != '/sdn/zones'})
    _, lines = doctor(world)
    assert {check for check, (status, _) in lines.items() if status == 'warn'} == {
        'privileges for vm restore -as-new', 'privileges for vm restore -with-config',
        'privileges for ct restore -with-config'}
    for group in ('vm restore -as-new', 'vm restore -with-config', 'ct restore -with-config'):
        assert lines[f'privileges for {group}'][1].startswith(f'{SNAP_USER} lacks SDN.Use on /sdn/zones;')


def test_a_user_without_the_cd_privilege_is_warned_for_restoring_a_config_only(world):
    as_user(world, without=('VM.Config.CDROM', 'VM.Config.Cloudinit'))
    _, lines = doctor(world)
    assert {check for check, (status, _) in lines.items() if status == 'warn'} == {
        'privileges for vm restore -with-config'}
    assert lines['privileges for vm restore -with-config'][1].startswith(
        f'{SNAP_USER} lacks VM.Config.CDROM on /vms; VM.Config.Cloudinit on /vms;')


def test_a_user_without_vm_audit_is_warned_that_storage_create_cannot_record_the_guests(world):
    as_user(world, without=('VM.Audit',))
    _, lines = doctor(world)
    assert lines['privileges for storage create'] == (
        'warn', (f'{SNAP_USER} lacks VM.Audit on /vms; fix: grant it if you use these commands (README, '
                'Least privilege)'))


def test_what_doctor_warns_of_for_restore_as_new_is_what_pve_refuses(world):
    world.pve.vm(101).config.update(net0='virtio,bridge=vmbr0', name='db')
    pve_reads_nfs_directories(world)
    made = world.run('vm', 'create', '-vm', 101)     # as root, before any grant
    assert made.code == 0, made.err
    stamp = re.search(tool.Names.STAMP_PATTERN, world.clones(world.vol1, 101)[-1])[0]
    as_user(world, without=('VM.Allocate',))
    _, lines = doctor(world)
    assert lines['privileges for vm restore -as-new'][0] == 'warn'

    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    assert refused.code == 1 and 'VM 201 not created' in refused.err.splitlines()[-1]
    assert 'Permission check failed' in refused.err.splitlines()[-1]
    assert world.pve.vm(201) is None and world.files(world.vol1, 201) == []
    world.pve.grant(SNAP_USER, '/vms', 'VM.Allocate')   # now the README role in full
    _, lines = doctor(world)
    assert lines['privileges for vm restore -as-new'][0] == 'ok'
    created = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert created.code == 0, created.err
    assert world.pve.vm(201).config['name'] == 'db'


def test_without_datastore_audit_every_command_fails(world):
    as_user(world, without=('Datastore.Audit', 'Datastore.AllocateSpace'))
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['privileges for every command'][0] == 'fail'
    assert 'lacks Datastore.Audit or Datastore.AllocateSpace on /storage/ONTAP01;' in \
        lines['privileges for every command'][1]
    assert lines['ONTAP01 storage'][0] == 'fail'
    assert 'PVE has no storage ONTAP01, or snap@pve may not see it' in lines['ONTAP01 storage'][1]


def test_pve_8_names_the_guest_agent_privilege_vm_monitor(world):
    world.pve.version = '8.2.4'
    as_user(world, role=dict(ROLE, **{'/vms': ('VM.Audit', 'VM.PowerMgmt', 'VM.Config.Disk', 'VM.Monitor',
                                               'VM.Allocate', *VM_CONFIG)}))

    result, lines = doctor(world)

    assert result.code == 0
    assert lines['proxmox release'][1] == 'PVE 8.2.4: supported; privileges are named as PVE 8 names them'
    assert lines['privileges for vm create -freeze'] == ('ok', f'{SNAP_USER} holds VM.Audit, VM.Monitor on /vms')


def test_pve_8_without_vm_monitor_warns_for_freeze(world):
    world.pve.version = '8.2.4'
    as_user(world)      # the PVE 9 role: VM.GuestAgent.*, which PVE 8 does not know
    _, lines = doctor(world)
    assert lines['privileges for vm create -freeze'][0] == 'warn'
    assert 'lacks VM.Monitor on /vms' in lines['privileges for vm create -freeze'][1]


def test_a_storage_that_is_not_nfs(world):
    world.write_config(**{'local-lvm': f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                                       f'verify = {world.a.cafile}\n'})
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['local-lvm storage'] == ('fail', ('it is of type lvmthin, not NFS; fix: only NFS storages on an ONTAP '
                                                  f'volume can be used: remove [local-lvm] from {world.config}'))


def test_a_storage_whose_export_is_no_volume(world):
    world.pve.storages['ONTAP02']['export'] = '/nowhere'
    result, lines = doctor(world)
    assert result.code == 1
    assert lines['ONTAP02 volume'][0] == 'fail'
    assert f'ONTAP {world.b.host}: no volume in SVM svm2 is mounted at /nowhere' in lines['ONTAP02 volume'][1]


# -- ONTAP

def test_a_wrong_ontap_password(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = wrong\nverify = {world.a.cafile}\n')
    result, lines = doctor(world)
    assert result.code == 1
    name = f'ONTAP {world.a.host}'
    assert lines[f'{name} connection'][0] == 'ok'
    assert lines[f'{name} login'] == ('fail', (f'{name}: authentication failed for user admin (check user and pass in '
                                              '[ONTAP01]); fix: correct user and pass in [ONTAP01]'))
    assert lines['ONTAP01 storage'][0] == 'ok'
    assert lines['ONTAP01 volume'] == ('warn', (f'not checked: {name} was not reached; fix: see the checks of that '
                                               'cluster'))
    assert lines[f'ONTAP {world.b.host} login'][0] == 'ok'


def test_an_untrusted_ontap_certificate(world):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = true\n')
    result, lines = doctor(world)
    assert result.code == 1
    status, text = lines[f'ONTAP {world.a.host} connection']
    assert status == 'fail' and 'TLS certificate verification failed' in text
    assert text.endswith("fix: set verify in [ONTAP01] to the CA file that signed the cluster's certificate")


def test_an_ontap_release_older_than_9_8(world):
    world.a.release = '9.7'

    result, lines = doctor(world)

    assert result.code == 1
    assert lines[f'ONTAP {world.a.host} release'] == (
        'fail', 'ONTAP 9.7.0: older than 9.8, the oldest release this tool supports; fix: upgrade ONTAP to 9.8 or later')


def test_the_oldest_supported_release_passes(world):
    world.a.release = world.b.release = '9.8'

    result, lines = doctor(world)

    assert lines[f'ONTAP {world.a.host} release'][0] == 'ok', lines[f'ONTAP {world.a.host} release']
    assert result.code == 0, result.err


def test_a_missing_flexclone_licence_fails_and_unreadable_licences_warn(world):
    del world.a.licenses['flexclone']
    world.b.fail('GET', r'/licensing/', status=403, code='6', message='not authorized for that command', times=None)

    result, lines = doctor(world)

    assert result.code == 1
    assert lines[f'ONTAP {world.a.host} licences'] == (
        'fail', ('FlexClone is not installed: needed for the vm commands and storage mount; fix: install the licence '
                '(system license add; ONTAP One holds both)'))
    status, text = lines[f'ONTAP {world.b.host} licences']
    assert status == 'warn' and text.startswith('unknown (')
    assert 'not authorized for that command' in text and 'SnapRestore for storage restore' in text


def test_a_rest_role_that_does_not_reach_snapshots(world):
    world.a.fail('GET', r'/snapshots$', status=403, code='6', message='not authorized for that command', times=None)
    result, lines = doctor(world)
    assert result.code == 1
    status, text = lines['ONTAP01 REST role']
    assert status == 'fail' and text.startswith('the account may not read snapshots (')
    assert 'fix: give its REST role /api/storage/volumes (all)' in text


def test_a_rest_role_check_that_meets_another_error_warns(world):
    world.a.fail('GET', r'/api/cluster/jobs$', status=500, code='1', message='busy', times=None)
    result, lines = doctor(world, '-storage', 'ONTAP01')
    assert result.code == 0
    assert lines['ONTAP01 REST role'][0] == 'warn'
    assert lines['ONTAP01 REST role'][1].startswith('not checked for jobs (')


def test_a_flexgroup_fails_for_the_vm_commands(world):
    world.vol1.style = 'flexgroup'
    result, lines = doctor(world)
    assert result.code == 1
    status, text = lines['ONTAP01 volume state']
    assert status == 'fail'
    assert 'it is a FlexGroup, and ONTAP offers file clones on FlexVol volumes only' in text


def test_an_offline_mirror_volume(world):
    world.vol2.state, world.vol2.type = 'offline', 'dp'
    _, lines = doctor(world)
    status, text = lines['ONTAP02 volume state']
    assert status == 'fail'
    assert text.startswith('proxmox_storage02 is offline, dp, flexvol: it is offline, not online; it is of type dp')
    assert 'volume online -vserver svm2 -volume proxmox_storage02' in text


def test_snapshot_autodelete_on_warns(world):
    world.vol1.snapshot_autodelete = True
    result, lines = doctor(world)
    assert result.code == 0
    assert lines['ONTAP01 snapshot autodelete'][0] == 'warn'
    assert "ONTAP deletes snapshots, this tool's storage snapshots included" in lines['ONTAP01 snapshot autodelete'][1]


def test_a_volume_nearly_full_warns(world):
    world.vol1.size = 4 * 2**20     # the disk files take a few hundred KiB
    (world.vol1.path / 'filler').write_bytes(bytes(3900 * 2**10))
    _, lines = doctor(world)
    assert lines['ONTAP01 space'][0] == 'warn'
    assert 'less than 10% free' in lines['ONTAP01 space'][1]


# -- SnapMirror from the volume (the policy lives on the destination cluster, here cluster b)

def with_label(world, label='daily'):
    world.write_config(ONTAP01=f'host = {world.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\n'
                               f'verify = {world.a.cafile}\nsnapmirror_label = {label}\n')


def test_a_volume_that_is_no_source_says_so(world):
    result, lines = doctor(world)
    assert result.code == 0
    assert lines['ONTAP01 SnapMirror'] == ('ok', 'svm1:proxmox_storage01 is the source of no SnapMirror relationship')
    asked = world.ontap_requests(path='/api/snapmirror/relationships', on=world.a)
    assert [(r['query']['list_destinations_only'], r['query']['source.path']) for r in asked] == [
        ('true', 'svm1:proxmox_storage01')]


def test_a_vault_policy_that_keeps_the_storages_label(world):
    with_label(world, 'daily')
    vault = world.a.add_snapmirror_policy('vault_daily', [('daily', 7), ('weekly', 52)])    # within cluster a
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:proxmox_storage01_dst', vault)

    result, lines = doctor(world)

    assert result.code == 0, result.out
    assert lines['ONTAP01 SnapMirror to svm_dr:proxmox_storage01_dst'] == (
        'ok', "policy vault_daily keeps 7 daily, 52 weekly: storage create's snapshots (label daily) are kept there")
    only_reads(world)


def test_a_vault_policy_without_the_storages_label_warns_and_names_the_labels(world):
    with_label(world, 'hourly')
    vault = world.a.add_snapmirror_policy('XDPDefault', [('daily', 7), ('weekly', 52)])
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:proxmox_storage01_dst', vault)

    result, lines = doctor(world)

    assert result.code == 0 and 'ERROR' not in result.err
    assert lines['ONTAP01 SnapMirror to svm_dr:proxmox_storage01_dst'] == (
        'warn', ("policy XDPDefault keeps 7 daily, 52 weekly, not hourly, the snapmirror_label of [ONTAP01]: storage "
                "create's snapshots are not vaulted; fix: set snapmirror_label in [ONTAP01] to daily or weekly, or add "
                'a rule for hourly to policy XDPDefault on the destination cluster (snapmirror policy add-rule -policy '
                'XDPDefault -snapmirror-label hourly -keep N)'))
    assert result.out.splitlines()[-1].endswith(', 1 warn, 0 fail')


@pytest.mark.parametrize('release', ['9.8', '9.19.1'])
def test_a_mirror_of_every_snapshot_keeps_this_tools_too_on_each_release(world, release):
    world.a.release = release
    with_label(world, 'hourly')
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:mirror', world.a.add_snapmirror_policy(
        'MirrorAllSnapshots', copy_all_source_snapshots=True))

    result, lines = doctor(world, '-storage', 'ONTAP01')

    assert result.code == 0, result.out
    assert lines['ONTAP01 SnapMirror to svm_dr:mirror'] == (
        'ok', "policy MirrorAllSnapshots keeps every snapshot of the volume, this tool's included")
    refused = [r for r in world.ontap_requests(path='/api/snapmirror/policies/*', on=world.a) if r['status'] == 400]
    assert len(refused) == (1 if release == '9.8' else 0)     # copy_all_source_snapshots came with 9.10


def test_a_policy_on_the_destination_cluster_cannot_be_checked_from_the_source(world):
    with_label(world)
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:proxmox_storage01_dst',
                           world.b.add_snapmirror_policy('XDPDefault', [('daily', 7)]))
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:elsewhere', world.b.add_snapmirror_policy('Other'))

    result, lines = doctor(world)

    assert result.code == 0
    assert lines['ONTAP01 SnapMirror to svm_dr:proxmox_storage01_dst'] == (
        'ok', ('policy XDPDefault: which labels it keeps cannot be checked from here, it lives on the destination '
              'cluster (there: snapmirror policy show -policy XDPDefault -fields snapmirror-label,keep)'))
    assert lines['ONTAP01 SnapMirror to svm_dr:elsewhere'][0] == 'ok'


def test_a_source_that_does_not_name_the_policy(world):
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:dst', world.b.add_snapmirror_policy('XDPDefault'))
    world.a.destinations_name_policy = False

    result, lines = doctor(world)

    assert result.code == 0
    assert lines['ONTAP01 SnapMirror to svm_dr:dst'] == (
        'ok', ('its policy (this cluster does not name it): which labels it keeps cannot be checked from here, it '
              'lives on the destination cluster (there: snapmirror show)'))
    assert not world.ontap_requests(path='/api/snapmirror/policies*', on=world.a)


def test_a_rest_role_without_snapmirror_warns_and_fails_nothing(world):
    world.a.fail('GET', r'/api/snapmirror/', status=403, code='6', message='not authorized for that command',
                 times=None)

    result, lines = doctor(world)

    assert result.code == 0
    status, text = lines['ONTAP01 SnapMirror']
    assert status == 'warn' and text.startswith('not checked: ') and 'not authorized for that command' in text
    assert text.endswith('fix: let the REST role read /api/snapmirror (readonly): README, Least privilege')


def test_a_policy_read_refused_warns_for_that_relationship(world):
    world.a.add_snapmirror('proxmox_storage01', 'svm_dr:dst', world.a.add_snapmirror_policy('XDPDefault'))
    world.a.fail('GET', r'/api/snapmirror/policies/', status=403, code='6', message='not authorized for that command',
                 times=None)

    result, lines = doctor(world)

    assert result.code == 0
    status, text = lines['ONTAP01 SnapMirror to svm_dr:dst']
    assert status == 'warn' and text.startswith('policy XDPDefault not read: ')


@pytest.mark.parametrize('policy, label, status, found', [
    ({'retention': [{'label': 'daily', 'count': '7'}]}, 'daily', 'ok', "keeps 7 daily: storage create's snapshots"),
    ({'retention': [{'label': 'daily', 'count': 7}]}, 'weekly', 'warn', 'keeps 7 daily, not weekly'),
    ({'retention': [{'label': 'daily'}]}, None, 'ok',
     'keeps daily; [S] sets no snapmirror_label: only snapshots taken with storage create -label daily go there'),
    ({'retention': []}, None, 'ok', "keeps no labelled snapshot (SnapMirror's own only); [S] sets no snapmirror_"),
    ({'retention': [{'label': 'sm_created', 'count': '1'}]}, 'daily', 'warn', 'keeps 1 sm_created, not daily'),
    ({'retention': [{'label': 'all_source_snapshots', 'count': '1'}]}, 'x', 'ok', 'keeps every snapshot'),
    ({'copy_all_source_snapshots': True}, None, 'ok', 'keeps every snapshot'),
    ({'type': 'sync', 'retention': [{'label': 'sm_created', 'count': '2'}]}, 'x', 'warn', '(sync) keeps 2 sm_'),
    (None, 'daily', 'ok', ': which labels it keeps cannot be checked from here'),
])
def test_snapmirror_check(policy, label, status, found):
    got_status, got_found, fix = tool.Doctor.snapmirror_check('P', policy, label, 'S')
    assert got_status == status
    assert got_found.startswith('policy P' + ('' if found.startswith(':') else ' ') + found), got_found
    assert (fix is None) == (status == 'ok')


# -- on a PVE node

@pytest.fixture
def node(monkeypatch, tmp_path):
    """This run is node pve1's; a fake findmnt shows ONTAP01's export mounted, nothing else."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    findmnt = bin_dir / 'findmnt'
    findmnt.write_text('#!/bin/sh\ncase "$*" in\n  *"/mnt/pve/ONTAP01 "*) cat "$0.json";;\n  *) exit 1;;\nesac\n')
    findmnt.chmod(0o755)
    monkeypatch.setitem(tool.Node.PROGRAMS, 'findmnt', str(findmnt))
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')

    def mounted(source='127.0.0.1:/proxmox_storage01', fstype='nfs4'):
        (bin_dir / 'findmnt.json').write_text(json.dumps({'filesystems': [
            {'source': source, 'fstype': fstype, 'options': 'rw,relatime,vers=4.2,nconnect=16'}]}))
    mounted()
    return mounted


def test_on_a_node_each_storage_is_mounted_from_its_export(world, node):
    _, lines = doctor(world)
    assert lines['ONTAP01 mount'] == ('ok', ('/mnt/pve/ONTAP01: 127.0.0.1:/proxmox_storage01 (nfs4, '
                                            'rw,relatime,vers=4.2,nconnect=16)'))
    assert lines['ONTAP02 mount'][0] == 'fail'
    assert lines['ONTAP02 mount'][1].startswith('nothing is mounted at /mnt/pve/ONTAP02; fix: activate the storage')

    world.pve.storages['ONTAP02']['nodes'] = 'pve2'
    node(source='127.0.0.1:/other_volume')
    _, lines = doctor(world)
    assert lines['ONTAP02 mount'] == ('ok', '/mnt/pve/ONTAP02 is not mounted: the storage is not enabled on this node')
    assert lines['ONTAP01 mount'][0] == 'fail'
    assert "not the storage's export 127.0.0.1:/proxmox_storage01" in lines['ONTAP01 mount'][1]


# -- -try

def doctor_files(vol):
    return sorted(p.name for p in vol.path.iterdir() if p.name.startswith('pve-ontap-snapshot-doctor-'))


def test_try_clones_a_file_it_wrote_and_deletes_both(world):
    before = world.state()

    result, lines = doctor(world, '-try')

    assert result.code == 0, result.out
    status, text = lines['ONTAP01 -try']
    assert status == 'ok'
    assert text.startswith('wrote pve-ontap-snapshot-doctor-ONTAP01-')
    assert text.endswith('.clone and read the clone back; deleted the 2 file(s) it made')
    assert lines['ONTAP02 -try'][0] == 'ok'
    assert world.state() == before
    clones = world.ontap_requests('POST', FILE_CLONE, on=world.a)
    assert len(clones) == 1 and clones[0]['body']['destination_path'].endswith('.clone')


# -- capture snapshots earlier runs left

OLD = '2024-03-13T14:42:47+00:00'


def leave_captures(world):
    """A capture ONTAP kept busy (renamed), one of a run that died, both old; and one of a run under way."""
    busy, died = 'pve_ontap_leftover_capture_2024-03-13_14:40:00+0000_vm100', 'pve_ontap_capture_2024-03-13_14:41:00+0000_all'
    for name in (busy, died):
        world.a.add_snapshot('proxmox_storage01', name, create_time=OLD)
    running = f'pve_ontap_capture_{tool.Names.utc_stamp()}_vm101'
    world.a.add_snapshot('proxmox_storage01', running)
    return busy, died, running


def test_doctor_names_captures_earlier_runs_left_and_changes_nothing(world):
    busy, died, _ = leave_captures(world)
    before = world.state()

    result, lines = doctor(world)

    assert result.code == 0, result.out
    assert lines['ONTAP01 leftover captures'] == ('warn', (
        f'{died}, {busy} in volume proxmox_storage01, left by earlier runs of vm create; 1 younger, of a run under '
        'way; fix: doctor -try -storage ONTAP01 deletes them now, as the next vm create on the volume does'))
    assert lines['ONTAP02 leftover captures'] == ('ok', 'none in volume proxmox_storage02')
    assert world.state() == before
    only_reads(world)


def test_doctor_try_deletes_the_old_ones_under_the_volumes_lock_and_leaves_a_runs_own(world, cluster_dir):
    busy, died, running = leave_captures(world)
    # the run that died had noted its capture in the volume's lock record, as vm create does
    record = write_lock_record(world, cluster_dir, '4242 pve2 2024-03-13_14:41:00+0000 vm create -all',
                               f'{died} 2024-03-13_14:41:00+0000')

    result, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert result.code == 0, result.out
    assert lines['ONTAP01 leftover captures'] == ('ok', (f'deleted {died}, {busy} in volume proxmox_storage01, left '
                                                         'by earlier runs; 1 younger, of a run under way'))
    assert sorted(world.vol1.snapshots) == [running]
    assert died not in record.read_text()
    assert not list((cluster_dir / 'lock').iterdir())       # its lock was taken and given back


def test_doctor_try_leaves_a_capture_no_run_noted(world, cluster_dir):
    busy, died, running = leave_captures(world)        # `died` noted nowhere: a run of another node's, maybe

    _, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert lines['ONTAP01 leftover captures'] == ('warn', (
        f'deleted {busy} in volume proxmox_storage01; left {died}: no run noted it; 1 younger, of a run under way; '
        'fix: if no run of another node uses it (one with -local-lock), delete it: volume snapshot delete'))
    assert sorted(world.vol1.snapshots) == sorted([died, running])


def test_doctor_try_deletes_nothing_while_another_run_holds_the_volume(world, cluster_dir):
    busy, died, running = leave_captures(world)
    hold_cluster_lock(world, cluster_dir)

    _, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    status, text = lines['ONTAP01 leftover captures']
    assert (status, text.split('; not deleted: ')[0]) == ('warn', (f'{died}, {busy} in volume proxmox_storage01, '
                                                                    'left by earlier runs'))
    assert 'not deleted: storage ONTAP01 (volume proxmox_storage01) is in use by another pve-ontap-snapshot run' in text
    assert sorted(world.vol1.snapshots) == sorted([busy, died, running])


def test_try_in_a_dry_run_makes_nothing(world):
    result, lines = doctor(world, '-try', '-dry-run')
    assert result.code == 0
    assert lines['ONTAP01 -try'][1].startswith('would write pve-ontap-snapshot-doctor-ONTAP01-')
    only_reads(world)


def test_try_clones_an_existing_image_when_writing_a_file_is_refused(world):
    world.a.fail('POST', r'/files/', status=403, code='6', message='not authorized for that command', times=None)
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw')
    before = world.state(), disk.read_bytes()

    result, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert result.code == 0
    status, text = lines['ONTAP01 -try']
    assert status == 'ok'
    assert text.startswith('writing a file was refused (')
    assert 'took images/100/vm-100-disk-0.raw, file-cloned it to pve-ontap-snapshot-doctor-ONTAP01-' in text
    assert text.endswith('deleted the 1 file(s) it made')
    assert (world.state(), disk.read_bytes()) == before


def test_try_removes_its_file_when_the_clone_fails(world):
    world.a.fail_job('POST', r'/api/storage/file/clone', message='Clone start failed: no FlexClone license')
    before = world.state()

    result, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert result.code == 1
    status, text = lines['ONTAP01 -try']
    assert status == 'fail'
    assert 'file-cloning it failed: ' in text and 'no FlexClone license' in text
    assert 'deleted the 1 file(s) it made' in text
    assert world.state() == before
    assert result.err == 'ERROR: doctor: 1 check(s) failed: ONTAP01 -try\n'


def test_try_follows_a_clone_whose_answer_was_lost(world):
    world.a.lose_answer('POST', r'/api/storage/file/clone')
    before = world.state()

    result, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert result.code == 0, result.out
    assert lines['ONTAP01 -try'][0] == 'ok'
    assert world.state() == before


def test_try_leaves_a_clone_still_running_alone_and_names_it(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', r'/api/storage/file/clone', seconds=4)

    result, lines = doctor(world, '-try', '-storage', 'ONTAP01')

    assert result.code == 1
    status, text = lines['ONTAP01 -try']
    assert status == 'fail'
    assert 'its file clone is of unknown outcome: file-clone pve-ontap-snapshot-doctor-ONTAP01-' in text
    assert 'still running on ONTAP' in text
    world.a.wait_for_jobs()
    left = doctor_files(world.vol1)
    assert len(left) == 2 and left[1].endswith('.clone')
    assert f'fix: once ONTAP has ended that job, delete {left[0]} and {left[1]} in volume proxmox_storage01' in text


# -- the pure parts: privileges per PVE release, what PVE answers, what a volume and a mount say

@pytest.mark.parametrize('major, names', [
    (8, [('VM.Audit',), ('VM.Monitor',)]),
    (7, [('VM.Audit',), ('VM.Monitor',)]),
    (9, [('VM.Audit',), ('VM.GuestAgent.Audit', 'VM.GuestAgent.Unrestricted'),
         ('VM.GuestAgent.FileSystemMgmt', 'VM.GuestAgent.Unrestricted')]),
    (None, [('VM.Audit',), ('VM.GuestAgent.Audit', 'VM.GuestAgent.Unrestricted'),
            ('VM.GuestAgent.FileSystemMgmt', 'VM.GuestAgent.Unrestricted')]),
])
def test_freeze_needs_the_guest_agent_privileges_of_the_pve_release(major, names):
    needs = tool.Doctor.required_privileges('vm create -freeze', major)
    assert [privileges for _, privileges, _ in needs] == names
    assert {(path, below) for path, _, below in needs} == {('/vms', True)}


@pytest.mark.parametrize('major', [8, 9])
def test_what_only_the_guest_agent_differs_in_between_pve_8_and_9(major):
    for group in tool.Doctor.PRIVILEGE_GROUPS:
        if group not in ('vm create -freeze', 'storage create -freeze', 'storage create -pause'):
            assert tool.Doctor.required_privileges(group, major) == tool.Doctor.required_privileges(group, 17 - major)


def test_suspend_and_removing_registered_clones_need_disk_and_space_privileges():
    suspend = tool.Doctor.required_privileges('vm create -suspend', 9)
    assert ('/vms', ('VM.Config.Disk',), True) in suspend
    assert ('/storage/{storage}', ('Datastore.AllocateSpace',), False) in suspend
    assert ('/storage/{storage}', ('Datastore.AllocateSpace',), False) in \
        tool.Doctor.required_privileges('vm delete, vm create -keep', 8)


@pytest.mark.parametrize('answer, held', [
    # PVE: the path asked, each privilege with its propagate flag
    ({'/vms': {'VM.Audit': 1, 'VM.PowerMgmt': 0}}, {'VM.Audit': True, 'VM.PowerMgmt': False}),
    # ACL paths above it count where they propagate
    ({'/': {'VM.Audit': 1, 'VM.Monitor': 0}}, {'VM.Audit': True}),
    ({'/': {'VM.Audit': 1}, '/vms': {'VM.Audit': 0}}, {'VM.Audit': False}),
    ({'/vmsx': {'VM.Audit': 1}, '/storage': {'VM.Audit': 1}}, {}),
    ({}, {}),
])
def test_privileges_at_a_path(answer, held):
    assert tool.Doctor.privileges_at(answer, '/vms') == held


def test_missing_privileges_say_where_and_whether_they_only_lack_propagation():
    needs = [('/vms', ('VM.Audit',), True), ('/vms', ('VM.PowerMgmt',), True),
             ('/storage/{storage}', ('Datastore.Audit', 'Datastore.AllocateSpace'), False)]
    held = {'/vms': {'VM.Audit': True, 'VM.PowerMgmt': False},
            '/storage/A': {'Datastore.AllocateSpace': False}, '/storage/B': {}}
    assert tool.Doctor.missing_privileges(needs, held, ['A', 'B']) == [
        'VM.PowerMgmt on /vms (held there, but not propagated to what is below it)',
        'Datastore.Audit or Datastore.AllocateSpace on /storage/B']
    assert tool.Doctor.missing_privileges(needs, held, []) == [('VM.PowerMgmt on /vms (held there, but not propagated to '
                                                        'what is below it)')]


@pytest.mark.parametrize('entries, found', [
    ([{'type': 'cluster', 'name': 'c', 'quorate': 1}, {'type': 'node', 'name': 'b', 'online': 0},
      {'type': 'node', 'name': 'a', 'online': 1}], ('c', True, [('a', True), ('b', False)])),
    ([{'type': 'cluster', 'name': 'c', 'quorate': 0}], ('c', False, [])),
    ([{'type': 'node', 'name': 'solo', 'online': 1, 'local': 1}], (None, None, [('solo', True)])),
])
def test_cluster_findings(entries, found):
    assert tool.Doctor.cluster_findings(entries) == found


@pytest.mark.parametrize('version, major', [({'version': '8.2.4'}, 8), ({'version': '9.0.10'}, 9), ({}, None),
                                            ({'version': 'x'}, None)])
def test_pve_major(version, major):
    assert tool.Doctor.pve_major(version) == major


@pytest.mark.parametrize('version, release', [({'generation': 9, 'major': 8, 'minor': 0}, (9, 8, 0)),
                                              ({'full': 'NetApp Release 9.14.1'}, None), (None, None)])
def test_ontap_release(version, release):
    assert tool.Doctor.ontap_release(version) == release


def volume(**fields):
    record = {'name': 'vol', 'state': 'online', 'type': 'rw', 'style': 'flexvol', 'snapshot_count': 3,
              'space': {'size': 1000, 'available': 500, 'snapshot': {'reserve_percent': 5, 'used': 10,
                                                                    'autodelete_enabled': False}},
              'snapshot_policy': {'name': 'none'}}
    record.update(fields)
    return {check: (status, found, fix) for check, status, found, fix in tool.Doctor.volume_checks(record, 'svm')}


@pytest.mark.parametrize('count, status', [(None, 'ok'), (0, 'ok'), (920, 'ok'), (921, 'warn'), (1022, 'warn'),
                                           (1023, 'fail')])
def test_snapshot_count_against_the_limit(count, status):
    assert volume(snapshot_count=count)['snapshots'][0] == status


def test_a_healthy_volume_is_all_ok():
    checks = volume()
    assert {status for status, _, _ in checks.values()} == {'ok'}
    assert checks['volume state'][1] == 'vol is online, rw, flexvol'
    assert checks['snapshot policy'][1] == "none: the volume holds this tool's snapshots only"
    assert checks['space'][1] == '500 B free of 1000 B, snapshot reserve 5%, snapshots use 10 B'


def test_fields_an_older_release_does_not_report_are_said_so():
    checks = volume(space={}, snapshot_policy=None, snapshot_count=None)
    assert checks['snapshot autodelete'] == ('ok', 'not reported by this release', None)
    assert checks['snapshot policy'] == ('ok', 'not reported by this release', None)
    assert checks['space'][1] == '- free of -, snapshot reserve unknown, snapshots use -'


MOUNTED = {'source': 'nfs1:/vol', 'fstype': 'nfs4', 'options': 'rw,vers=4.2'}


@pytest.mark.parametrize('mount, enabled_here, status', [
    (MOUNTED, True, 'ok'),
    (dict(MOUNTED, source='NFS1:/vol/'), True, 'ok'),
    (dict(MOUNTED, source='nfs1:/other'), True, 'fail'),
    (dict(MOUNTED, source='nfs2:/vol'), True, 'fail'),
    (dict(MOUNTED, fstype='ext4', source='/dev/sda1'), True, 'fail'),
    (None, True, 'fail'),
    (None, False, 'ok'),
])
def test_mount_check(mount, enabled_here, status):
    assert tool.Doctor.mount_check(mount, 'nfs1', '/vol', '/mnt/pve/S', enabled_here)[0] == status


@pytest.mark.parametrize('section, keys, gaps, unknown', [
    ('proxmox', ['proxmox_host', 'proxmox_user', 'proxmox_pass'], [], []),
    ('proxmox', ['proxmox_host', 'proxmox_user', 'proxmox_token_name'], ['proxmox_token_value'], []),
    ('proxmox', ['proxmox_host'], ['proxmox_user', 'proxmox_pass (or proxmox_token_name and proxmox_token_value)'],
     []),
    ('ONTAP01', ['host', 'user', 'cert', 'key', 'svm', 'verify'], [], []),
    ('ONTAP01', ['host', 'usr', 'pass'], ['user'], ['usr']),
    ('defaults', ['job_timeout', 'jobtimeout'], [], ['jobtimeout']),
])
def test_section_gaps_and_unknown_keys(section, keys, gaps, unknown):
    assert (tool.ConfigFile.section_gaps(section, keys), tool.ConfigFile.unknown_keys(section, keys)) == (gaps, unknown)


@pytest.mark.parametrize('major', [8, 9])
def test_the_readme_role_of_each_pve_release_holds_every_privilege_doctor_checks(major):
    role = readme_role(major)
    needed = {privileges[0] for group in tool.Doctor.PRIVILEGE_GROUPS for _, privileges, _ in
              tool.Doctor.required_privileges(group, major)}
    assert needed <= set(role)
    assert {'VM.Monitor', 'VM.GuestAgent.Audit'} & set(role) == ({'VM.Monitor'} if major == 8 else
                                                                 {'VM.GuestAgent.Audit'})


# -- the cluster-wide lock

def test_doctor_shows_held_and_stale_locks(world, cluster_dir):
    held, stale = world.lock_name('ONTAP01'), world.lock_name('ONTAP02')
    since = '2024-03-13_14:42:47+0000 storage create -storage X'
    hold_cluster_lock(world, cluster_dir, 'ONTAP01', holder=f'4242 pve2 {since}')
    lock = hold_cluster_lock(world, cluster_dir, 'ONTAP02', holder=f'4343 pve2 {since}')
    os.utime(lock, (1, time.time() - 600))

    _, lines = doctor(world)

    assert lines[f'cluster lock {held}'] == ('ok', ('held by pid 4242 on node pve2 since 2024-03-13_14:42:47+0000: '
                                                    'storage create -storage X'))
    status, text = lines[f'cluster lock {stale}']
    assert status == 'warn' and text.startswith('stale, not updated for 6') and '(pid 4343 on node pve2' in text


def test_doctor_says_when_no_cluster_lock_can_be_taken(world, tmp_path, monkeypatch):
    monkeypatch.setattr(tool.Node, 'CLUSTER_DIR', str(tmp_path / 'no-pve'))

    _, lines = doctor(world)
    world.write_config(defaults='local_lock = yes\n')
    _, allowed = doctor(world)

    status, text = lines['cluster lock']
    assert status == 'warn' and text.startswith('not on a PVE node') and 'add -local-lock' in text
    assert allowed['cluster lock'][0] == 'ok' and 'local_lock = yes' in allowed['cluster lock'][1]


def test_doctor_finds_no_lock_held_on_a_quiet_cluster(world, cluster_dir):
    _, lines = doctor(world)

    assert lines['cluster lock'] == ('ok', f"{cluster_dir / 'lock'} takes locks; none of this tool's is held")


def test_doctor_calls_the_lock_of_a_run_that_died_on_this_node_stale(world, cluster_dir):
    holder = f'{os.getpid()}:{tool.Holder.process_start(os.getpid()) + 1} {tool.Holder.this_node()} 2024-03-13_14:42:47+0000 vm create'
    hold_cluster_lock(world, cluster_dir, holder=holder)
    alive = f'{os.getpid()}:{tool.Holder.process_start(os.getpid())} {tool.Holder.this_node()} 2024-03-13_14:42:47+0000 vm create'
    hold_cluster_lock(world, cluster_dir, 'ONTAP02', holder=alive)

    result = world.run('doctor')

    lines = {line.split(': ', 1)[0]: line for line in result.out.splitlines()}
    assert lines[f'warn  cluster lock {world.lock_name()}'].startswith(
        f'warn  cluster lock {world.lock_name()}: stale: its run died, on this node (pid {os.getpid()} on node '), lines
    assert lines[f'ok    cluster lock {world.lock_name("ONTAP02")}'].endswith('vm create')


# -- what others could change: the lock directory, the units

@pytest.mark.skipif(os.geteuid() != 0, reason="another user's directory is made with chown, as root")
def test_a_lock_directory_another_user_made_fails(world, lock_dir):
    lock_dir.mkdir()
    os.chown(lock_dir, 65534, 65534)
    result, lines = doctor(world, '-storage', 'ONTAP01')
    assert result.code == 1
    status, found = lines['lock directory']
    assert status == 'fail' and f'{lock_dir} is owned by nobody (uid 65534)' in found
    assert found.endswith(f'fix: rm -r {lock_dir} (the next run makes it anew)')


def test_a_lock_directory_of_its_own_or_none_yet_is_ok(world, lock_dir, monkeypatch):
    assert doctor(world, '-storage', 'ONTAP01')[1]['lock directory'][0] == 'ok'
    monkeypatch.setattr(tool.Node, 'CLUSTER_DIR', str(lock_dir.parent / 'no-pve'))
    assert world.run('-local-lock', 'storage', 'create', '-storage', 'ONTAP01').code == 0
    status, found = doctor(world, '-storage', 'ONTAP01')[1]['lock directory']
    assert status == 'ok' and found.startswith(f'{lock_dir}, owned by ') and found.endswith('mode 700')


def test_the_manifest_key_is_named_once_a_snapshot_made_it(world, cluster_dir):
    assert doctor(world, '-storage', 'ONTAP01')[1]['manifest key'][1].startswith('none in ')
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    assert doctor(world, '-storage', 'ONTAP01')[1]['manifest key'] == (
        'ok', f'{cluster_dir / tool.Manifest.KEY_FILE}: manifests are signed with it')


@pytest.fixture
def units(tmp_path, monkeypatch):
    """The package's units as installed (its service in a vendor directory), and an /etc for the admin's."""
    vendor, admin = tmp_path / 'lib-systemd', tmp_path / 'etc-systemd'
    vendor.mkdir()
    (vendor / tool.Doctor.UNIT_NAME).write_text((PACKAGING / 'systemd' / tool.Doctor.UNIT_NAME).read_text())
    monkeypatch.setattr(tool.Doctor, 'UNIT_DIRS', (str(vendor),))
    monkeypatch.setattr(tool.Doctor, 'UNIT_OVERRIDE_DIRS', (str(admin),))
    return admin


def drop_in(admin, unit, text):
    directory = admin / f'{unit}.d'
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'override.conf').write_text(text)
    return directory / 'override.conf'


def test_a_drop_in_that_weakens_the_service_sandbox_is_named(world, units):
    assert doctor(world, '-storage', 'ONTAP01')[1]['service sandbox'][0] == 'ok'
    drop_in(units, 'pve-ontap-snapshot-storage@.service', '[Service]\nReadWritePaths=/srv/locks\n')
    assert doctor(world, '-storage', 'ONTAP01')[1]['service sandbox'][1].endswith(
        'with 1 drop-in(s) that leave its sandbox as it is')
    path = drop_in(units, 'pve-ontap-snapshot-storage@ONTAP01.service',
                   '[Service]\nProtectSystem=false\nCapabilityBoundingSet=CAP_SYS_ADMIN\nReadWritePaths=/srv\n')

    status, found = doctor(world, '-storage', 'ONTAP01')[1]['service sandbox']

    assert status == 'warn'
    assert found.startswith(f'set otherwise than the package ships it: {path}: ProtectSystem=false, '
                            'CapabilityBoundingSet=CAP_SYS_ADMIN; fix:'), found


def test_a_whole_copy_of_the_service_without_its_sandbox_is_named(world, units):
    units.mkdir()
    (units / tool.Doctor.UNIT_NAME).write_text('[Service]\nType=oneshot\nExecStart=/usr/sbin/pve-ontap-snapshot doctor\n')
    status, found = doctor(world, '-storage', 'ONTAP01')[1]['service sandbox']
    assert status == 'warn' and f'{units / tool.Doctor.UNIT_NAME}: no ProtectSystem, no ProtectHome,' in found


def test_a_storage_with_pve9_volume_chains_is_a_warning_naming_the_vms_with_such_disks(world):
    assert doctor(world, '-storage', 'ONTAP01')[1]['ONTAP01 volume chains'][0] == 'ok'
    world.pve.storages['ONTAP01']['snapshot-as-volume-chain'] = 1
    world.pve.vm(100).config['parent'] = 'before-update'
    status, found = doctor(world, '-storage', 'ONTAP01')[1]['ONTAP01 volume chains']
    assert status == 'warn' and 'VMs with one now: VM 100 (scsi0)' in found


# -- guests a run that died left held

def test_doctor_names_a_vm_left_paused_and_try_resumes_it(world, cluster_dir, pmxcfs):
    vm = kill_while_paused(world)

    seen = world.run('doctor', '-storage', 'ONTAP01')
    tried = world.run('-wait', 10, 'doctor', '-storage', 'ONTAP01', '-try')

    (line,) = [line for line in seen.out.splitlines() if 'guests left held' in line]
    assert line.startswith('warn  ONTAP01 guests left held: VM 100 paused by a run that died (pid '), line
    assert line.endswith('fix: doctor -try -storage ONTAP01 brings them back, as the next run on them does')
    (line,) = [line for line in tried.out.splitlines() if 'guests left held' in line]
    assert line.startswith('ok    ONTAP01 guests left held: VM 100 was left paused by a run that died'), line
    assert line.endswith('resumed it') and vm.qmpstatus == 'running'


# -- the timers enabled on this node, as systemd tells of them

def systemd_time(seconds):
    """A time as `systemctl show` prints it under TZ=UTC (empty: never)."""
    return time.strftime('%a %Y-%m-%d %H:%M:%S UTC', time.gmtime(seconds)) if seconds else ''


class FakeSystemd:
    """systemd as doctor asks it: a fake /usr/bin/systemctl (Node.PROGRAMS) that answers `show`
    from the units it is given and notes how it was called, and a directory for /run/systemd/system."""

    def __init__(self, directory):
        self.bin = directory / 'systemctl'
        self.calls = directory / 'systemctl.calls'
        self.bin.write_text('#!/bin/sh\necho "TZ=$TZ $*" >> "$0.calls"\n'
                            'case "$*" in\n'
                            '  "show --all --property=Id,UnitFileState,LastTriggerUSec,NextElapseUSecRealtime -- '
                            'pve-ontap-snapshot-*.timer") cat "$0.timers";;\n'
                            '  "show --property=Environment -- pve-ontap-snapshot-monitor.service")\n'
                            '    cat "$0.monitor";;\n'
                            '  *) echo "Unknown command verb $1." >&2; exit 1;;\n'
                            'esac\n')
        self.bin.chmod(0o755)
        self.timers()
        self.monitor_environment('TEXTFILE=/var/lib/prometheus/node-exporter OPTIONS=')

    def timers(self, *units):
        """The timers systemd has in memory: (name, UnitFileState, last trigger, next elapse), times
        in epoch seconds or None."""
        self.bin.with_name('systemctl.timers').write_text('\n'.join(
            f'Id={name}\nUnitFileState={state}\nLastTriggerUSec={systemd_time(last)}\n'
            f'NextElapseUSecRealtime={systemd_time(next_elapse)}\n' for name, state, last, next_elapse in units))

    def monitor_environment(self, environment):
        self.bin.with_name('systemctl.monitor').write_text(f'Environment={environment}\n')

    def called(self):
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    directory = tmp_path / 'systemd'
    (directory / 'run-systemd-system').mkdir(parents=True)
    fake = FakeSystemd(directory)
    monkeypatch.setattr(tool.Doctor, 'SYSTEMD_DIR', str(directory / 'run-systemd-system'))
    monkeypatch.setitem(tool.Node.PROGRAMS, 'systemctl', str(fake.bin))
    return fake


def stamp(seconds):
    return time.strftime('%Y-%m-%d_%H:%M:%S+0000', time.gmtime(seconds))


def run_record(cluster_dir, storage):
    return json.loads((cluster_dir / 'pve-ontap-snapshot' / f'storage-create@{storage}.run').read_text())


def test_without_systemd_the_timers_are_not_checked(world, tmp_path, monkeypatch):
    monkeypatch.setattr(tool.Doctor, 'SYSTEMD_DIR', str(tmp_path / 'no-systemd'))
    assert doctor(world, '-storage', 'ONTAP01')[1]['timers'] == (
        'ok', f'not checked: systemd is not the init system here (no {tmp_path / "no-systemd"})')

    monkeypatch.setitem(tool.Node.PROGRAMS, 'systemctl', str(tmp_path / 'no-systemctl'))
    monkeypatch.setattr(tool.Doctor, 'SYSTEMD_DIR', str(tmp_path))
    assert doctor(world, '-storage', 'ONTAP01')[1]['timers'] == (
        'ok', f'not checked: no {tmp_path / "no-systemctl"} here')


def test_no_timer_enabled_is_said_so_and_systemd_is_asked_in_utc(world, systemd):
    systemd.timers(('pve-ontap-snapshot-storage@ONTAP01.timer', 'disabled', None, None))

    result, lines = doctor(world, '-storage', 'ONTAP01')

    assert result.code == 0
    assert lines['timers'] == ('ok', ('none of pve-ontap-snapshot-*.timer is enabled on this node: nothing is '
                                     'scheduled here (README, Scheduled snapshots)'))
    assert systemd.called() == [('TZ=UTC show --all --property=Id,UnitFileState,LastTriggerUSec,NextElapseUSecRealtime '
                                '-- pve-ontap-snapshot-*.timer')]


def test_a_storage_timer_says_when_storage_create_last_succeeded_as_its_run_record_says(world, systemd, cluster_dir):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    success = run_record(cluster_dir, 'ONTAP01')['last_success']
    trigger, next_elapse = int(success['ended']) - 30, int(success['ended']) + 86400
    systemd.timers(('pve-ontap-snapshot-storage@ONTAP01.timer', 'enabled', trigger, next_elapse),
                   ('pve-ontap-snapshot-storage@ONTAP02.timer', 'enabled', None, next_elapse))

    result, lines = doctor(world)

    assert result.code == 0
    assert lines['timer pve-ontap-snapshot-storage@ONTAP01.timer'] == (
        'ok', (f'storage create last succeeded {stamp(success["ended"])} on node {success["node"]}; timer last '
              f'triggered {stamp(trigger)}, next {stamp(next_elapse)}'))
    # Just enabled, not fired yet: nothing to say against it.
    assert lines['timer pve-ontap-snapshot-storage@ONTAP02.timer'] == (
        'ok', f'no storage create of ONTAP02 recorded yet; timer last triggered never, next {stamp(next_elapse)}')
    assert 'timers' not in lines


def test_a_storage_timer_whose_storage_create_failed_since_it_last_succeeded_warns_with_the_error(world, systemd,
                                                                                                  cluster_dir):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.a.fail('POST', r'/snapshots$', status=500, message='no space left')
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 1
    record = run_record(cluster_dir, 'ONTAP01')
    success, failure = record['last_success'], record['last_failure']
    systemd.timers(('pve-ontap-snapshot-storage@ONTAP01.timer', 'enabled', int(failure['ended']), None))

    result, lines = doctor(world, '-storage', 'ONTAP01')

    assert result.code == 0     # a warning: the setup itself may be sound
    status, found = lines['timer pve-ontap-snapshot-storage@ONTAP01.timer']
    assert status == 'warn'
    assert found.startswith(f'storage create failed {stamp(failure["ended"])} on node {failure["node"]}: ')
    assert 'no space left' in found
    assert f'; last succeeded {stamp(success["ended"])} on node {success["node"]}; timer last triggered' in found
    assert found.endswith('; fix: journalctl -u pve-ontap-snapshot-storage@ONTAP01.service (a failed run also mails '
                          'root)')


def test_a_storage_timer_that_never_succeeded_or_not_for_a_day_and_a_half_warns(world, systemd, cluster_dir):
    world.b.fail('POST', r'/snapshots$', status=500, message='no space left')
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 1
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    failure = run_record(cluster_dir, 'ONTAP02')['last_failure']
    success = run_record(cluster_dir, 'ONTAP01')['last_success']
    # ONTAP01's timer fired 37 hours after the last success: the runs since did not end (or not here).
    late = int(success['ended']) + 37 * 3600
    systemd.timers(('pve-ontap-snapshot-storage@ONTAP01.timer', 'enabled', late, None),
                   ('pve-ontap-snapshot-storage@ONTAP02.timer', 'enabled', int(failure['ended']), None))

    _, lines = doctor(world)

    status, found = lines['timer pve-ontap-snapshot-storage@ONTAP02.timer']
    assert status == 'warn' and found.startswith(f'storage create failed {stamp(failure["ended"])} on node ')
    assert 'no space left; it never succeeded; timer last triggered' in found
    assert lines['timer pve-ontap-snapshot-storage@ONTAP01.timer'] == (
        'warn', (f'storage create last succeeded {stamp(success["ended"])} on node {success["node"]}, more than 36 '
                f'hours before the timer last triggered ({stamp(late)}); fix: journalctl -u '
                'pve-ontap-snapshot-storage@ONTAP01.service (a failed run also mails root)'))


def test_a_timer_that_fired_with_no_run_recorded_warns(world, systemd):
    systemd.timers(('pve-ontap-snapshot-storage@ONTAP01.timer', 'enabled', time.time() - 60, None))
    status, found = doctor(world, '-storage', 'ONTAP01')[1]['timer pve-ontap-snapshot-storage@ONTAP01.timer']
    assert status == 'warn' and ', but no storage create of ONTAP01 is recorded to have ended' in found


def test_the_monitor_timer_names_its_textfile_directory(world, systemd, tmp_path):
    textfile = tmp_path / 'node exporter'
    systemd.timers(('pve-ontap-snapshot-monitor.timer', 'enabled', 1_700_000_100, None))
    systemd.monitor_environment(f'OPTIONS=-all "TEXTFILE={textfile}"')      # a drop-in's, with a blank

    missing = doctor(world, '-storage', 'ONTAP01')[1]['timer pve-ontap-snapshot-monitor.timer']
    textfile.mkdir()
    there = doctor(world, '-storage', 'ONTAP01')[1]['timer pve-ontap-snapshot-monitor.timer']

    assert missing == ('warn', (f'enabled, but its textfile directory {textfile} is missing, so its service is skipped '
                               f'(last triggered {stamp(1_700_000_100)}); fix: apt install prometheus-node-exporter, '
                               'or set another TEXTFILE in a drop-in (README, Scheduled snapshots)'))
    assert there == ('ok', f"writes monitor's metrics to {textfile} every hour; last triggered {stamp(1_700_000_100)}")
    assert systemd.called()[-1] == 'TZ=UTC show --property=Environment -- pve-ontap-snapshot-monitor.service'


def test_systemd_that_does_not_answer_is_one_warning(world, systemd):
    systemd.bin.write_text('#!/bin/sh\necho "Failed to connect to bus: No such file or directory" >&2\nexit 1\n')
    assert doctor(world, '-storage', 'ONTAP01')[1]['timers'] == (
        'warn', (f'not checked: {systemd.bin} show failed: Failed to connect to bus: No such file or directory; '
                'fix: see systemctl status'))
