"""Three outcomes, never two: a job that outlasts its bound or an answer lost after the request
went out is unknown, and nothing is rolled back, deleted or started on the guess that it did
not happen. Each story sets up the fault, runs the command, waits until every ONTAP job has
ended, and then checks what is on the storage and in PVE."""

import json

from world import VM100_ONTAP_DISKS, cloning, error_lines, wait_for_tasks

import pve_ontap_snapshot as tool

STAMP = '2024-03-12_10:00:00+0000'
LIVE = 'images/101/vm-101-disk-0.raw'
THEN = b'then' * 2048


def running_db(world):
    """VM 101 running, with a snapshot STAMP whose disk holds THEN; returns its live bytes."""
    vm = world.pve.vm(101)
    vm.status = vm.qmpstatus = 'running'
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{STAMP}.raw').write_bytes(THEN)
    return world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()


def prerestore_files(world, vmid=101):
    return [name for name in world.files(world.vol1, vmid) if '-prerestore-' in name and tool.Names.SNAPSHOT_FILE.match(name)]


def snapshot_files(world, vmid=100):
    return [name for vol in (world.vol1, world.vol2) for name in world.clones(vol, vmid)]


def restored_with_undo_point(world, live):
    """VM 101's disk holds the snapshot's bytes, and its one pre-restore file the bytes before."""
    (undo,) = prerestore_files(world)
    return (world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == THEN
            and world.disk(world.vol1, 101, undo).read_bytes() == live)


def restore_101(world):
    return world.run('vm', 'restore', '-vm', 101, '-snapshot', STAMP, '-shutdown', '-yes')


OVERWRITE = {'destination_path': LIVE, 'overwrite_destination': True}


# -- vm restore

def test_an_overwrite_that_outlasts_every_bound_leaves_the_vm_down_and_the_undo_point_kept(world):
    live = running_db(world)
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'VM 101: restore not finished: scsi0 unknown' in line
    assert 'still running' in line and 'VM left stopped and pre-restore snapshot' in line
    # the job landed after the run: the disk is restored, its former content is in the undo point
    assert restored_with_undo_point(world, live) and world.pve.vm(101).status == 'stopped'


def test_an_overwrite_that_ends_while_it_is_followed_counts_as_done(world):
    live = running_db(world)
    world.write_config(defaults='job_timeout = 2\n')   # unknown after 2 + 2 s, followed 2 s more
    world.a.slow_job('POST', '/api/storage/file/clone', 5, match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert 'clone(s) of unknown outcome: finding out' in result.err
    assert restored_with_undo_point(world, live) and world.pve.vm(101).status == 'running'


def test_an_overwrite_whose_answer_is_lost_is_never_taken_for_failed(world):
    live = running_db(world)
    world.a.lose_answer('POST', '/api/storage/file/clone', match=OVERWRITE)

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'scsi0 unknown' in line and 'after the request went out' in line and 'cannot be read back' in line
    assert restored_with_undo_point(world, live) and world.pve.vm(101).status == 'stopped'


def test_a_pre_restore_copy_of_unknown_outcome_changes_no_disk_and_starts_the_vm_again(world):
    live = running_db(world)
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match={'source_path': LIVE})

    result = restore_101(world)
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'nothing restored, the pre-restore copy failed' in line and 'still unknown' in line
    assert world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes() == live
    assert world.pve.vm(101).status == 'running'


def test_a_paused_vm_is_not_restored(world):
    running_db(world)
    world.pve.vm(101).qmpstatus = 'paused'
    before = world.state()

    result = restore_101(world)

    assert error_lines(result) == [('ERROR: VM 101 is paused, not running, and the tool never resumes such a VM: '
                                   'resume or stop it first')]
    assert world.state() == before


# -- vm create

def test_a_clone_that_outlasts_its_bound_is_followed_to_its_end_once_the_vm_runs_again(world):
    """The clones come from the captures after the VM runs again, so a slow one is simply
    followed: the guest never waits for it, and the snapshot stays consistent."""
    world.write_config(defaults='job_timeout = 2\n')   # unknown after 2 + 2 s, followed 2 s more
    world.a.slow_job('POST', '/api/storage/file/clone', 5, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert 'clone(s) of unknown outcome: finding out' in result.err
    assert len(snapshot_files(world)) == len(VM100_ONTAP_DISKS)
    assert world.pve.vm(100).status == 'running' and not world.vol1.snapshots and not world.vol2.snapshots


def test_a_clone_still_running_after_every_bound_is_named_and_then_listed_as_incomplete(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    (left,) = snapshot_files(world)
    (capture,) = world.vol1.snapshots      # the clone still reads from it: kept, for a later run to delete
    assert f'capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) kept' in result.err
    assert (f'still unknown: file-clone .snapshot/{capture}/images/100/vm-100-disk-0.raw to images/100/{left}: job '
            in line)
    assert f'still running on ONTAP {world.a.host}' in line
    assert f'once ONTAP has ended it, check and delete images/100/{left}' in line
    stamp = left.split('-snapshot-')[1].rsplit('.', 1)[0]

    listed = json.loads(world.run('-output', 'json', 'vm', 'list', '-vm', 100).out)
    assert [(s['stamp'], s['complete']) for s in listed] == [(stamp, False)]

    # -keep never counts it: the one set kept is the new, complete one
    world.write_config()
    assert world.run('vm', 'create', '-vm', 100, '-no-register', '-keep', 1).code == 0
    names = snapshot_files(world)
    assert len(names) == len(VM100_ONTAP_DISKS) and not any(stamp in name for name in names)


def test_a_clone_whose_answer_is_lost_is_read_back(world):
    world.a.lose_answer('POST', '/api/storage/file/clone')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    (made,) = world.clones(world.vol1, 101)
    assert world.disk(world.vol1, 101, made).read_bytes() == world.disk(world.vol1, 101,
                                                                        'vm-101-disk-0.raw').read_bytes()


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
    assert world.state() == before and not snapshot_files(world)
    assert not [r for r in world.a.requests + world.b.requests if r['path'] == '/api/storage/file/clone']
    assert world.pve.vm(100).status == 'running'


def test_a_capture_whose_answer_is_lost_without_a_pause_is_read_back_and_cloned_from(world):
    world.a.lose_answer('POST', r'/snapshots$')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert len(snapshot_files(world)) == len(VM100_ONTAP_DISKS)
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
    assert not world.vol2.snapshots and not snapshot_files(world)
    assert not [r for r in world.a.requests if r['method'] == 'DELETE']


def test_a_gateway_timeout_after_a_clone_went_out_is_read_back_not_retried(world):
    world.a.lose_answer('POST', '/api/storage/file/clone', status=504)

    result = world.run('vm', 'create', '-vm', 101, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert len(world.clones(world.vol1, 101)) == 1
    assert len([r for r in world.a.requests if r['path'] == '/api/storage/file/clone']) == 1


def test_a_paused_vm_is_cloned_as_it_is_and_left_paused(world):
    vm = world.pve.vm(100)
    vm.qmpstatus = 'paused'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 0, result.err
    assert 'VM 100 is paused, not running: cloned as it is and left paused' in result.err
    assert (vm.status, vm.qmpstatus) == ('running', 'paused') and not vm.lock
    assert len(snapshot_files(world)) == len(VM100_ONTAP_DISKS)
    assert not [r for r in world.pve.requests if r[1].endswith(('/suspend', '/resume', '/start'))]


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
    assert world.state() == before and not snapshot_files(world)


# -- deletes that answer with a job

def test_a_file_delete_answered_by_a_failing_job_is_an_error(world):
    world.run('vm', 'create', '-vm', 101, '-no-register')
    (made,) = world.clones(world.vol1, 101)
    stamp = made.split('-snapshot-')[1].rsplit('.', 1)[0]
    world.a.file_delete_jobs = True
    world.a.fail_job('DELETE', '/files/.*disk-0-snapshot', code=131102, message='Read-only file system')

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert result.code == 1
    (line,) = error_lines(result)
    assert f'could not delete images/101/{made}' in line and 'Read-only file system' in line
    assert made in world.files(world.vol1, 101)


def test_a_file_delete_answered_by_a_slow_job_is_followed_to_its_end(world):
    world.run('vm', 'create', '-vm', 101, '-no-register')
    (made,) = world.clones(world.vol1, 101)
    stamp = made.split('-snapshot-')[1].rsplit('.', 1)[0]
    world.a.file_delete_jobs = True
    world.write_config(defaults='job_timeout = 10\nread_timeout = 7\n')     # return_timeout 2 s
    world.a.slow_job('DELETE', '/files/', 3)

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert result.code == 0, result.err
    assert made not in world.files(world.vol1, 101)
    assert any(r['path'].startswith('/api/cluster/jobs/') for r in world.a.requests)


# -- storage snapshots

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


def test_a_query_based_delete_is_understood_in_every_answer_shape(world):
    """storage delete -force deletes by name, unread (without -force the snapshot is read for its hold)."""
    for shape in ('jobs', 'job', 'bare'):
        name = f'proxmox_snapshot_2024-03-13_14:42:4{len(shape)}+0000'
        world.a.add_snapshot('proxmox_storage01', name)
        world.a.collection_delete_answer = shape

        result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', name, '-force')

        assert result.code == 0, (shape, result.err)
        assert name not in world.vol1.snapshots


def test_a_query_based_delete_that_matched_nothing_says_so_when_ontap_tells(world):
    world.a.collection_delete_answer = 'job'

    result = world.run('storage', 'delete', '-storage', 'ONTAP01', '-snapshot', 'proxmox_snapshot_nothing', '-force')

    assert error_lines(result) == [f'ERROR: ONTAP {world.a.host}: volume proxmox_storage01 has no snapshot proxmox_snapshot_nothing']


# -- dry runs

def test_a_dry_run_prints_its_lines_in_disk_order(world):
    result = world.run('-dry-run', 'vm', 'create', '-vm', 100)

    clones = [line for line in result.out.splitlines() if line.startswith('would file-clone')]
    assert all(line.split()[2].startswith('.snapshot/pve_ontap_capture_') for line in clones)
    sources = [line.split()[2].split('/', 2)[2] for line in clones]
    assert sources == [f'images/100/{name}' for name in ('vm-100-disk-5.raw', 'vm-100-disk-0.raw', 'vm-100-disk-1.raw',
                                                        'vm-100-disk-2.qcow2', 'vm-100-disk-6.raw',
                                                        'vm-100-disk-4.raw')]


def test_a_flexclone_whose_answer_is_lost_is_read_back_and_mounted(world):
    world.a.add_snapshot('proxmox_storage01', 'proxmox_snapshot_2024-03-13_14:42:47+0000')
    world.a.lose_answer('POST', r'^/api/storage/volumes$')

    result = world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot',
                       'proxmox_snapshot_2024-03-13_14:42:47+0000')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    assert world.a.volume('proxmox_storage01_clone') is not None
    assert world.pve.storages['ONTAP01-CLONE']['export'] == '/proxmox_storage01_clone'


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
