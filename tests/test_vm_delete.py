"""vm delete: every file of one VM snapshot (its clones on both clusters, its manifest, the unused
disk entries that registered them), nothing else, and never a snapshot with a file attached as a
disk."""

from world import OLDER_STAMP, ORIGINAL_STAMP, VM101_DISK, attach_snapshot_file, error_lines, make_set, vm100_sources

OLD, OLDER = ORIGINAL_STAMP, OLDER_STAMP


# -- the files of a snapshot

def test_delete_removes_every_file_of_the_set_and_nothing_else(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources)
    make_set(world, 100, OLD, sources)
    before = {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)}

    result = world.run('vm', 'delete', '-vm', 100, '-snapshot', OLDER)

    assert result.code == 0, result.err
    for vol in (world.vol1, world.vol2):
        assert world.files(vol, 100) == [f for f in before[vol.name] if OLDER not in f]
    assert [s['stamp'] for s in world.vm_snapshots(100)] == [OLD]


def test_delete_of_an_unknown_stamp_is_an_error(world):
    make_set(world, 100, OLD, vm100_sources(world))
    before = world.state()

    result = world.run('vm', 'delete', '-vm', 100, '-snapshot', OLDER)

    assert result.code == 1
    assert result.err.strip() == f'ERROR: VM 100 has no snapshot {OLDER} (it has: {OLD})'
    assert world.state() == before


def test_delete_of_registered_clones_removes_their_unused_entries_and_the_manifest(world):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    (stamp,) = [s['stamp'] for s in world.vm_snapshots(101)]
    config = world.pve.vm(101).config
    (key,) = [k for k in config if k.startswith('unused')]
    assert config[key] == f'ONTAP01:101/vm-101-disk-0-snapshot-{stamp}.raw'

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert result.code == 0, result.err
    assert not [k for k in world.pve.vm(101).config if k.startswith('unused')]
    assert world.files(world.vol1, 101) == [VM101_DISK]      # the clone and its manifest gone
    deletes = world.ontap_requests('DELETE', '*/files/*')
    assert len(deletes) == 2    # PVE deleted the registered clone; the manifest goes through ONTAP


def test_delete_refuses_a_set_with_a_file_attached_as_a_disk(world):
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    attach_snapshot_file(world, 101, OLDER)
    before = world.state()

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', OLDER)

    assert result.code == 1
    assert f'snapshot {OLDER} is in use: images/101/vm-101-disk-0-snapshot-{OLDER}.raw is attached as scsi5' \
        in result.err
    assert world.state() == before


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
    assert world.ontap_requests(path='/api/cluster/jobs/*', on=world.a)
