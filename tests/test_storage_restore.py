"""storage restore: the whole volume behind a storage back to one of its snapshots (ONTAP deletes
the newer ones), only once no guest on it runs, is locked or hibernated (or with -force), no mount
stands on a newer snapshot, and the admin said yes; what it will do is shown first."""

import json

import pytest
from world import (
    DST_A,
    DST_B,
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    answer_after_a_change,
    error_lines,
    fails_cleanly,
    log_in_without_vm_audit,
    snapshots_across_a_dst_change,
)

# -- the revert

def test_restore_brings_back_the_bytes(world):
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw')
    original = disk.read_bytes()
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    disk.write_bytes(b'changed after the snapshot')

    world.pve.vm(100).status = 'stopped'

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    (patch,) = world.ontap_requests('PATCH')
    assert patch['path'] == f'/api/storage/volumes/{world.vol1.uuid}'
    assert patch['query']['restore_to.snapshot.name'] == OLD_SNAPSHOT
    assert not world.ontap_requests(path='*/private/cli*')


def test_restore_across_a_dst_change_names_the_later_snapshot_as_newer(world):
    snapshots_across_a_dst_change(world)
    world.pve.vm(100).status = 'stopped'

    result = world.run('-output', 'json', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', DST_A, '-yes')

    assert result.code == 0, result.err
    assert json.loads(result.out)['newer'] == [DST_B]
    assert world.storage_snapshots() == [DST_A]     # ONTAP deleted the newer one, as the plan said


def test_storage_restore_with_force_reverts_and_ontap_deletes_the_newer_snapshots(world):
    world.add_storage_snapshots()
    disk = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    original = disk.read_bytes()
    disk.write_bytes(b'later')

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-force', '-yes')

    assert result.code == 0, result.err
    assert disk.read_bytes() == original
    assert sorted(world.vol1.snapshots) == [OLD_SNAPSHOT]


def test_storage_restore_from_cron_at_warn_prints_nothing_but_reverts(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'

    result = world.run('-loglevel', 'warn', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT,
                       '-yes')

    assert (result.code, result.out, result.err) == (0, '', '')
    assert sorted(world.vol1.snapshots) == [OLD_SNAPSHOT]


def test_storage_restore_plan_as_json_on_stdout(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    world.pve.snapshot_lock(101, 'backup')
    before = world.state()

    result = world.run('-output', 'json', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT,
                       '-yes')

    assert result.code == 1
    assert json.loads(result.out) == {
        'storage': 'ONTAP01', 'cluster': world.a.host, 'svm': 'svm1', 'volume': 'proxmox_storage01',
        'snapshot': OLD_SNAPSHOT,
        'guests': [{'vmid': 100, 'type': 'qemu', 'name': 'web', 'node': 'pve1', 'status': 'stopped', 'lock': None},
                   {'vmid': 101, 'type': 'qemu', 'name': 'db', 'node': 'pve2', 'status': 'stopped', 'lock': 'backup'}],
        'unchecked': [], 'newer': ['hourly.2024-03-14_0905', MARCH_SNAPSHOT]}
    assert error_lines(result) == result.err.splitlines()     # the plan is not on stderr as well
    assert world.state() == before


def test_a_revert_to_an_unknown_snapshot_is_an_error(world):
    fails_cleanly(world, ('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT), 1,
                  f'volume proxmox_storage01 has no snapshot {OLD_SNAPSHOT}')


# -- guests in the way

def test_storage_restore_shows_what_it_will_do_and_refuses_under_running_vms(world):
    world.add_storage_snapshots()
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1 and result.out == ''
    assert 'Guests with disks on it: VM 100 web (running), VM 101 db (stopped)' in result.err
    assert f'Snapshots newer than it, which ONTAP deletes: hourly.2024-03-14_0905, {MARCH_SNAPSHOT}' in result.err
    assert error_lines(result) == [('ERROR: storage ONTAP01: VM 100 running on it, shut down first '
                                   '(or -force to revert anyway)')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_storage_restore_counts_running_containers_too(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    world.pve.add_ct(200, 'files', node='pve2', status='running',
                     config={'rootfs': 'ONTAP01:200/vm-200-disk-0.raw,size=8G',
                             'mp0': 'local-lvm:vm-200-disk-1,mp=/data,size=8G'})
    world.pve.add_ct(201, 'elsewhere', status='running')
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1
    assert 'Guests with disks on it: VM 100 web (stopped), VM 101 db (stopped), CT 200 files (running)' in result.err
    assert error_lines(result) == [('ERROR: storage ONTAP01: CT 200 running on it, shut down first '
                                   '(or -force to revert anyway)')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_storage_restore_refuses_when_a_node_cannot_say_what_runs_there(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    world.pve.set_node_offline('pve2')
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1
    assert 'Unknown whether VM 101 on node pve2 uses it:' in result.err and 'No route to host' in result.err
    assert error_lines(result) == [('ERROR: storage ONTAP01: VM 101 not checked (node unreachable) '
                                   '(or -force to revert anyway)')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


@pytest.mark.parametrize('lock, line', [
    ('backup', 'VM 101 locked (backup), try again when that is done'),
    ('migrate', 'VM 101 locked (migrate), try again when that is done'),
    ('suspended', 'VM 101 hibernated on it, resume and shut down first')])
def test_storage_restore_refuses_under_a_hibernated_or_locked_guest(world, lock, line):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    world.pve.snapshot_lock(101, lock)
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1
    assert f'Guests with disks on it: VM 100 web (stopped), VM 101 db (stopped, locked: {lock})' in result.err
    assert error_lines(result) == [f'ERROR: storage ONTAP01: {line} (or -force to revert anyway)']
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_storage_restore_names_every_kind_of_guest_in_the_way(world):
    world.add_storage_snapshots()
    world.pve.snapshot_lock(101, 'backup')
    world.pve.add_ct(200, 'files', node='pve2', status='stopped', config={'rootfs': 'ONTAP01:200/vm-200-disk-0.raw'})
    world.pve.snapshot_lock(200, 'suspended')
    world.pve.add_ct(201, 'cache', node='pve1', status='running', config={'rootfs': 'ONTAP01:201/vm-201-disk-0.raw'})

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: storage ONTAP01: VM 100, CT 201 running on it, shut down first; CT 200 '
                                    'hibernated on it, resume and shut down first; VM 101 locked (backup), try again '
                                    'when that is done (or -force to revert anyway)')]
    assert not world.ontap_changes(on=world.a)


def test_storage_restore_with_force_reverts_under_a_locked_guest(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    world.pve.snapshot_lock(101, 'backup')
    disk = world.disk(world.vol1, 101, 'vm-101-disk-0.raw')
    original = disk.read_bytes()
    disk.write_bytes(b'later')

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-force', '-yes')

    assert result.code == 0, result.err
    assert 'VM 101 db (stopped, locked: backup)' in result.err
    assert disk.read_bytes() == original


def test_a_user_who_cannot_see_every_guest_is_refused_the_revert(world):
    world.add_storage_snapshots()
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT).code == 0
    world.pve.vm(100).status = 'stopped'
    log_in_without_vm_audit(world)
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-yes')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: ops@pve lacks VM.Audit on /vms, so restore '
                                    'cannot see every guest: grant it (README, Least privilege), or add -force')]
    assert world.state() == before


# -- a mount on a newer snapshot

def test_storage_restore_refuses_while_a_newer_snapshot_backs_a_mount_and_so_does_its_dry_run(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT).code == 0
    before = world.state()
    line = (f'ERROR: storage ONTAP01: reverting to {OLD_SNAPSHOT} deletes the newer {MARCH_SNAPSHOT}, but snapshot '
            f'{MARCH_SNAPSHOT} of volume proxmox_storage01 is in use by FlexClone proxmox_storage01_clone, mounted '
            'as PVE storage ONTAP01-CLONE: unmount ONTAP01-CLONE first')

    for dry in ((), ('-dry-run',)):
        result = world.run(*dry, 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT, '-force',
                           '-yes')
        assert result.code == 1 and error_lines(result) == [line]

    assert world.state() == before and not world.ontap_requests('PATCH')


# -- the question

def test_storage_restore_without_a_terminal_needs_yes(world):
    world.add_storage_snapshots()
    world.pve.vm(100).status = 'stopped'
    before = world.state()

    result = world.run('storage', 'restore', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)

    assert result.code == 2
    assert error_lines(result) == [(f'ERROR: Revert storage ONTAP01 to {OLD_SNAPSHOT}: not asking without a terminal; '
                                   'add -yes to go ahead')]
    assert world.state() == before


def test_a_guest_started_while_the_admin_reads_the_question_stops_a_storage_restore(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.pve.vm(100).status = 'stopped'
    snapshots = sorted(world.vol1.snapshots)

    def start_vm_100():
        world.pve.vm(100).status = world.pve.vm(100).qmpstatus = 'running'
    code, err = answer_after_a_change(world, start_vm_100, 'storage', 'restore', '-storage', 'ONTAP01',
                                      '-snapshot', OLD_SNAPSHOT)

    assert (code, err.splitlines()) == (1, [('ERROR: storage ONTAP01: meanwhile VM 100 running on it, shut down '
                                            'first; nothing reverted')])
    assert not world.ontap_requests('PATCH') and sorted(world.vol1.snapshots) == snapshots


def test_a_guest_locked_while_the_admin_reads_the_question_stops_a_storage_restore(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT)
    world.pve.vm(100).status = 'stopped'
    snapshots = sorted(world.vol1.snapshots)

    def a_backup_of_vm_101_begins():
        world.pve.snapshot_lock(101, 'backup')
    code, err = answer_after_a_change(world, a_backup_of_vm_101_begins, 'storage', 'restore', '-storage', 'ONTAP01',
                                      '-snapshot', OLD_SNAPSHOT)

    assert (code, err.splitlines()) == (1, [('ERROR: storage ONTAP01: meanwhile VM 101 locked (backup), try again '
                                            'when that is done; nothing reverted')])
    assert not world.ontap_requests('PATCH') and sorted(world.vol1.snapshots) == snapshots
