"""Three outcomes, never two, for every command that changes something: a job that outlasts its
bound or an answer lost after the request went out is unknown, found out where it can be (read
back, followed), and nothing is rolled back, deleted or started on the guess that it did not
happen. Each story sets up the fault, runs the command, waits until every ONTAP job has ended, and
then checks what is on the storage and in PVE."""


from world import (
    FILE_CLONE,
    OLDER_STAMP,
    VM100_ONTAP_DISKS,
    VM101_DISK,
    cloning,
    drop_pve_request,
    error_lines,
    lose_pve_answer,
    make_set,
    wait_for_tasks,
)

import pve_ontap_snapshot as tool

LIVE = 'images/101/vm-101-disk-0.raw'
OVERWRITE = {'destination_path': LIVE, 'overwrite_destination': True}


def running_db(world):
    """VM 101 running, with a VM snapshot OLDER_STAMP an earlier run left: (the bytes of its live
    disk, of the snapshot's)."""
    vm = world.pve.vm(101)
    vm.status = vm.qmpstatus = 'running'
    then = make_set(world, 101, OLDER_STAMP, [(world.vol1, VM101_DISK)])[VM101_DISK]
    return world.disk(world.vol1, 101, VM101_DISK).read_bytes(), then


def restored_with_undo_point(world, live, then):
    """VM 101's disk holds the snapshot's bytes, and its one pre-restore file the bytes before."""
    (undo,) = [name for name in world.clones(world.vol1, 101) if '-prerestore-' in name]
    return (world.disk(world.vol1, 101, VM101_DISK).read_bytes() == then
            and world.disk(world.vol1, 101, undo).read_bytes() == live)


def restore_101(world):
    return world.run('vm', 'restore', '-vm', 101, '-snapshot', OLDER_STAMP, '-shutdown', '-yes')


# -- vm create: the clones

def test_a_clone_that_outlasts_its_bound_is_followed_to_its_end_once_the_vm_runs_again(world):
    """The clones come from the captures after the VM runs again, so a slow one is simply
    followed: the guest never waits for it, and the snapshot stays consistent."""
    world.write_config(defaults='job_timeout = 2\n')   # unknown after 2 + 2 s, followed 2 s more
    world.a.slow_job('POST', '/api/storage/file/clone', 5, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert 'clone(s) of unknown outcome: finding out' in result.err
    assert len(world.snapshot_files()) == len(VM100_ONTAP_DISKS)
    assert world.pve.vm(100).status == 'running' and not world.vol1.snapshots and not world.vol2.snapshots


def test_a_clone_still_running_after_every_bound_is_named_and_then_listed_as_incomplete(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    (left,) = world.snapshot_files()
    (capture,) = world.vol1.snapshots      # the clone still reads from it: kept, for a later run to delete
    assert f'capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) kept' in result.err
    assert (f'still unknown: file-clone .snapshot/{capture}/images/100/vm-100-disk-0.raw to images/100/{left}: job '
            in line)
    assert f'still running on ONTAP {world.a.host}' in line
    assert f'once ONTAP has ended it, check and delete images/100/{left}' in line
    stamp = left.split('-snapshot-')[1].rsplit('.', 1)[0]

    listed = world.vm_snapshots(100)
    assert [(s['stamp'], s['complete']) for s in listed] == [(stamp, False)]

    # -keep never counts it: the one set kept is the new, complete one
    world.write_config()
    assert world.run('vm', 'create', '-vm', 100, '-no-register', '-keep', 1).code == 0
    names = world.snapshot_files()
    assert len(names) == len(VM100_ONTAP_DISKS) and not any(stamp in name for name in names)


def test_a_clone_whose_answer_is_lost_is_read_back(world):
    world.a.lose_answer('POST', '/api/storage/file/clone')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    (made,) = world.clones(world.vol1, 101)
    assert world.disk(world.vol1, 101, made).read_bytes() == world.disk(world.vol1, 101,
                                                                        'vm-101-disk-0.raw').read_bytes()


def test_a_gateway_timeout_after_a_clone_went_out_is_read_back_not_retried(world):
    world.a.lose_answer('POST', '/api/storage/file/clone', status=504)

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert len(world.clones(world.vol1, 101)) == 1
    assert len(world.ontap_requests(path=FILE_CLONE)) == 1


def test_a_lost_answer_that_cannot_be_looked_into_stays_unknown_and_nothing_is_taken_back(world):
    world.a.lose_answer('POST', '/api/storage/file/clone')
    world.a.fail('GET', r'^/api/cluster/jobs$', status=403, code='6', message='not authorized for that command')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'finding out what it did failed' in line and 'not authorized' in line and 'still unknown' in line
    (made,) = world.clones(world.vol1, 101)
    assert f'check and delete images/101/{made}' in line


# -- vm create: the captures, the manifest

def test_a_capture_whose_answer_is_lost_inside_a_pause_is_read_back_and_taken_back(world):
    """Whether the capture was taken before the VM ran again cannot be known: the snapshot is
    not consistent, so nothing is cloned, and the capture (read back: it exists) is deleted."""
    world.a.lose_answer('POST', r'/snapshots$')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'a capture snapshot ended only after the VM ran again: not consistent; nothing was cloned' in line
    assert world.state() == before and not world.snapshot_files()
    assert not world.ontap_requests(path=FILE_CLONE)
    assert world.pve.vm(100).status == 'running'


def test_a_capture_whose_answer_is_lost_without_a_pause_is_read_back_and_cloned_from(world):
    world.a.lose_answer('POST', r'/snapshots$')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert len(world.snapshot_files()) == len(VM100_ONTAP_DISKS)
    assert not world.vol1.snapshots and not world.vol2.snapshots


def test_a_capture_that_cannot_be_read_back_is_never_deleted_and_nothing_is_cloned(world):
    world.a.lose_answer('POST', r'/snapshots$')
    world.a.fail('GET', r'^/api/cluster/jobs$', status=403, code='6', message='not authorized for that command')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    (capture,) = world.vol1.snapshots
    assert 'finding out what it did failed' in line and 'nothing was cloned' in line
    assert f'still unknown: ONTAP {world.a.host}: create snapshot {capture} of volume proxmox_storage01' in line
    assert 'the next vm create on that volume deletes it once it exists' in line
    assert not world.vol2.snapshots and not world.snapshot_files()
    assert not world.ontap_requests('DELETE', on=world.a)


def test_a_capture_delete_whose_answer_is_lost_is_left_for_the_next_run(world, cluster_dir, monkeypatch):
    world.a.lose_answer('DELETE', r'/snapshots/')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    (line,) = [line for line in result.err.splitlines() if 'whether it was deleted is unknown' in line]
    assert line.startswith('WARNING: capture snapshot pve_ontap_capture_') and 'the next vm create on the volume' in line
    (noted,) = [entry.split()[0] for entry in world.noted(cluster_dir) if entry.startswith('pve_ontap_capture_')]

    # ONTAP did delete it: the next run finds it gone and strikes it from the record, deleting nothing
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    world.a.requests.clear()
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    assert noted not in '\n'.join(world.noted(cluster_dir))
    assert not world.ontap_requests('DELETE', on=world.a)


def test_a_manifest_write_whose_answer_is_lost_is_read_back(world):
    world.a.lose_answer('POST', r'snapshot-.*manifest')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert len(world.records(world.vol1, 101)) == 1
    lookups = world.ontap_requests('GET', '*manifest.json', on=world.a)
    assert lookups and lookups[-1]['status'] == 200


# -- vm create: PVE's tasks

def test_a_shutdown_task_past_its_bound_is_followed_before_the_vm_is_started_again(world):
    vm = world.pve.vm(100)
    world.pve.time_scale = 0.02
    vm.shutdown_secs = 150      # 3 s, well within PVE's own shutdown timeout
    world.pve.shutdown_default_timeout = 600
    world.write_config(defaults='task_timeout = 2\n')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')
    wait_for_tasks(world.pve)

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith(f'ERROR: Proxmox {world.pve_host}: shutdown VM 100: task still running after 2 s')
    # had the VM been started while the shutdown went on, it would be down now
    assert vm.status == vm.qmpstatus == 'running' and not vm.lock
    assert world.state() == before and not world.snapshot_files()


# -- vm restore

def test_an_overwrite_that_outlasts_every_bound_leaves_the_vm_down_and_the_undo_point_kept(world):
    live, then = running_db(world)
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'VM 101: restore not finished: scsi0 unknown' in line
    assert 'still running' in line and 'VM left stopped and pre-restore snapshot' in line
    # the job landed after the run: the disk is restored, its former content is in the undo point
    assert restored_with_undo_point(world, live, then) and world.pve.vm(101).status == 'stopped'


def test_an_overwrite_that_ends_while_it_is_followed_counts_as_done(world):
    live, then = running_db(world)
    world.write_config(defaults='job_timeout = 2\n')   # unknown after 2 + 2 s, followed 2 s more
    world.a.slow_job('POST', '/api/storage/file/clone', 5, match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert 'clone(s) of unknown outcome: finding out' in result.err
    assert restored_with_undo_point(world, live, then) and world.pve.vm(101).status == 'running'


def test_an_overwrite_whose_answer_is_lost_is_never_taken_for_failed(world):
    live, then = running_db(world)
    world.a.lose_answer('POST', '/api/storage/file/clone', match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'scsi0 unknown' in line and 'after the request went out' in line and 'cannot be read back' in line
    assert restored_with_undo_point(world, live, then) and world.pve.vm(101).status == 'stopped'


def test_a_pre_restore_copy_of_unknown_outcome_changes_no_disk_and_starts_the_vm_again(world):
    live, _ = running_db(world)
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match={'source_path': LIVE})

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'nothing restored, the pre-restore copy failed' in line and 'still unknown' in line
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live
    assert world.pve.vm(101).status == 'running'


# -- vm restore -with-config and -as-new: PVE's answers

def test_a_config_change_whose_answer_is_lost_leaves_the_vm_down_unless_it_is_read_back(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.status = vm101.qmpstatus = 'running'
    vm101.config['memory'] = '4096'
    lose_pve_answer(world.pve, 'PUT', '/qemu/101/config')
    # the change is carried out: read back, it is the saved config, and the VM runs again
    done = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-shutdown', '-yes')
    assert done.code == 0, done.err
    assert str(vm101.config['memory']) == '1024' and vm101.status == 'running'


def test_a_config_change_of_unknown_outcome_leaves_the_vm_stopped_and_says_so(world, vm101):
    stamp = world.vm_snapshot(101)
    vm101.status = vm101.qmpstatus = 'running'
    vm101.config['memory'] = '4096'
    drop_pve_request(world.pve, 'PUT', '/qemu/101/config')

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-with-config', '-shutdown', '-yes')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'restored from' in line and 'whether its config was put back is unknown' in line, line
    assert vm101.status == 'stopped' and str(vm101.config['memory']) == '4096'


def test_a_create_whose_answer_is_lost_is_read_back(world, vm101):
    stamp = world.vm_snapshot(101)
    lose_pve_answer(world.pve, 'POST', '/nodes/pve2/qemu')
    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)
    assert result.code == 0, result.err
    assert 'the answer to its create was lost, but it exists' in result.err
    assert world.pve.vm(201) is not None and world.files(world.vol1, 201) == ['vm-201-disk-0.raw']


def test_a_create_whose_task_cannot_be_followed_leaves_its_disks_and_says_so(world, vm101):
    stamp = world.vm_snapshot(101)
    lose_pve_answer(world.pve, 'GET', '/status')        # every read of a task's status

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', stamp, '-as-new', 201)

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'could not be followed' in line and 'its disks are left' in line, line
    # the create went through: nothing of it was taken back on a guess
    assert world.pve.vm(201) is not None and world.files(world.vol1, 201) == ['vm-201-disk-0.raw']


# -- storage create

def test_a_storage_snapshot_whose_answer_is_lost_is_read_back_and_retention_runs(world):
    for n in (1, 2):
        world.a.add_snapshot('proxmox_storage01', f'proxmox_snapshot_2024-03-1{n}_10:00:00+0000',
                             create_time=f'2024-03-1{n}T10:00:00+00:00')
    world.a.lose_answer('POST', r'/snapshots$')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 2)
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    names = sorted(world.vol1.snapshots)
    assert len(names) == 2 and names[0] == 'proxmox_snapshot_2024-03-12_10:00:00+0000'


def test_a_record_whose_answer_was_lost_is_read_back(world):
    world.a.lose_answer('POST', r'files/pve-ontap-snapshot\.manifest')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert world.storage_record(name)['vm-101']['config'].startswith('memory: 1024\n')


# -- storage mount

def test_a_flexclone_whose_answer_is_lost_is_read_back_and_mounted(world):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-13_14:42:47+0000')
    world.a.lose_answer('POST', r'^/api/storage/volumes$')

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot',
                       'proxmox_snapshot_2024-03-13_14:42:47+0000')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert world.a.volume('proxmox_storage01_clone') is not None
    assert world.pve.storages['ONTAP01-CLONE']['export'] == '/proxmox_storage01_clone'
