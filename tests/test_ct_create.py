"""ct create: ONTAP file clones of a container's root disk and mount points, named as a VM's,
with the CT held as the mode asks (none: captured first; -shutdown; -pause: its cgroup freezer,
on its own node only) and always returned to its state."""

import json
import re
import signal

import pytest
from world import CtNode, cloning, error_lines, is_capture, signalled_run, write_lock_record

STAMP = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'


@pytest.fixture
def pve2(world, cts, monkeypatch, tmp_path):
    """This run on node pve2, where CT 200 runs."""
    return CtNode(monkeypatch, tmp_path / 'pve2', 'pve2')


def clone_of(world, vol, ctid, disk):
    (name,) = [name for name in world.clones(vol, ctid) if name.startswith(disk.rsplit('.', 1)[0] + '-snapshot-')]
    assert world.disk(vol, ctid, name).read_bytes() == world.disk(vol, ctid, disk).read_bytes()
    return name


def manifest(world, vol, ctid):
    (name,) = world.records(vol, ctid)
    return name, json.loads(world.disk(vol, ctid, name).read_text())


def test_a_running_container_is_captured_first_and_cloned_as_a_vm_is(world, cts):
    result = world.run('ct', 'create', '-ct', 200)

    assert result.code == 0, result.err
    name = clone_of(world, world.vol1, 200, 'vm-200-disk-0.raw')
    assert re.fullmatch(r'vm-200-disk-0-snapshot-' + STAMP + r'\.raw', name)
    record, saved = manifest(world, world.vol1, 200)
    assert re.fullmatch(r'vm-200-snapshot-' + STAMP + r'\.atomic\.manifest\.json', record)
    assert (saved['type'], saved['vmid'], [d['key'] for d in saved['disks']]) == ('lxc', 200, ['rootfs'])
    assert 'rootfs: ONTAP01:200/vm-200-disk-0.raw' in saved['config']
    assert 'WARNING: CT 200: skipping disk mp0 (/srv/data): a bind mount of the node' in result.err
    assert 'CT 200 is running: its disks are captured while it writes to them' in result.err
    assert '-pause or -shutdown for a consistent snapshot' in result.err
    assert world.pve.ct(200).status == 'running' and not world.vol1.snapshots
    # off the CT's node: registered through the API, as a VM's clones are; pending on a running CT, which
    # hot-plugs no unusedN (pve-container src/PVE/LXC/Config.pm, vmconfig_hotplug_pending: "skip")
    assert world.pve.ct(200).pending['unused0'] == f'ONTAP01:200/{name}'


def test_a_stopped_container_with_a_mount_point_on_another_cluster(world, cts):
    result = world.run('ct', 'create', '-ct', 201, '-no-register')

    assert result.code == 0, result.err
    root, mount = clone_of(world, world.vol1, 201, 'vm-201-disk-0.raw'), clone_of(world, world.vol2, 201,
                                                                                  'vm-201-disk-1.raw')
    assert root.split('-snapshot-')[1] == mount.split('-snapshot-')[1]
    assert world.records(world.vol1, 201) == []     # beside the first disk in key order, as a VM's
    record, saved = manifest(world, world.vol2, 201)
    assert '.shutdown.manifest.json' in record
    assert {d['key']: d['clone'] for d in saved['disks']} == {'mp0': f'images/201/{mount}',
                                                              'rootfs': f'images/201/{root}'}
    assert world.pve.ct(201).status == 'stopped' and 'unused0' not in world.pve.ct(201).config


def test_shutdown_shuts_a_container_down_and_starts_it_again(world, cts):
    result = world.run('ct', 'create', '-ct', 200, '-shutdown', '-no-register')

    assert result.code == 0, result.err
    posts = [path for method, path, _ in world.pve.requests if method == 'POST' and '/lxc/200/' in path]
    assert [path.rsplit('/', 1)[1] for path in posts] == ['shutdown', 'start']
    assert all('/nodes/pve2/lxc/200/status/' in path for path in posts)
    assert world.pve.ct(200).status == 'running'
    assert '.shutdown.manifest.json' in manifest(world, world.vol1, 200)[0]
    clone_of(world, world.vol1, 200, 'vm-200-disk-0.raw')


def test_pause_freezes_a_container_on_its_node_syncs_it_and_thaws_it(world, pve2):
    result = world.run('ct', 'create', '-ct', 200, '-pause')

    assert result.code == 0, result.err
    calls = pve2.calls()
    assert calls == ['lxc-info -s -n 200', 'lxc-freeze -n 200', 'lxc-info -p -n 200', 'sync -f /proc/4242/root/',
                     'lxc-unfreeze -n 200', 'pct rescan --vmid 200']
    assert pve2.state(200) == 'RUNNING'
    assert '.paused.manifest.json' in manifest(world, world.vol1, 200)[0]
    clone_of(world, world.vol1, 200, 'vm-200-disk-0.raw')
    assert 'CT 200 was frozen for' in result.err


def test_pause_syncs_each_mount_point_of_a_disk(world, pve2):
    ct = world.pve.ct(201)
    ct.node, ct.status = 'pve2', 'running'

    result = world.run('ct', 'create', '-ct', 201, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert [call for call in pve2.calls() if call.startswith('sync')] == ['sync -f /proc/4242/root/var/mail',
                                                                          'sync -f /proc/4242/root/']
    assert pve2.state(201) == 'RUNNING'


def test_pause_off_the_containers_node_is_refused_in_one_line(world, cts, monkeypatch, tmp_path):
    pve1 = CtNode(monkeypatch, tmp_path / 'pve1', 'pve1')
    before = world.state()

    result = world.run('ct', 'create', '-ct', 200, '-pause')

    assert result.code == 1
    assert error_lines(result) == [(
        'ERROR: CT 200 runs on node pve2, and this is node pve1: -pause freezes a container only on its own node, '
        'as root; run it there (ct create -all -node-local -pause on each node covers a cluster), or use -shutdown')]
    assert pve1.calls() == [] and world.state() == before
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw'] and not world.vol1.snapshots


def test_pause_off_any_node_is_refused_in_one_line(world, cts):
    result = world.run('ct', 'create', '-ct', 200, '-pause')

    assert result.code == 1
    assert error_lines(result)[0].startswith('ERROR: CT 200 runs on node pve2, and this is no PVE node as root: ')
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw']


def test_a_container_frozen_before_the_run_is_cloned_as_it_is_and_left_frozen(world, pve2):
    pve2.freeze(200)

    result = world.run('ct', 'create', '-ct', 200, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert 'CT 200 is frozen, not running: cloned as it is and left frozen' in result.err
    assert pve2.state(200) == 'FROZEN'
    assert not [call for call in pve2.calls() if call.startswith(('lxc-freeze', 'lxc-unfreeze'))]
    assert '.paused.manifest.json' in manifest(world, world.vol1, 200)[0]


def test_a_freeze_whose_sync_fails_is_thawed_and_nothing_is_cloned(world, pve2):
    pve2.fail('sync')

    result = world.run('ct', 'create', '-ct', 200, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith('ERROR: CT 200: syncing rootfs (/) failed: sync: failed')
    assert pve2.state(200) == 'RUNNING' and 'lxc-unfreeze -n 200' in pve2.calls()
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw'] and not world.vol1.snapshots


def test_a_thaw_that_fails_says_what_to_run_on_which_node(world, pve2):
    pve2.fail('lxc-unfreeze')

    result = world.run('ct', 'create', '-ct', 200, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'CT 200 could not be thawed and may still be frozen: run' in line
    assert f'"{pve2.programs["lxc-unfreeze"]} -n 200" on node pve2' in line
    assert pve2.state(200) == 'FROZEN'
    # the snapshot itself was made, and said so
    clone_of(world, world.vol1, 200, 'vm-200-disk-0.raw')


def test_ct_create_all_takes_every_container_and_no_vm(world, cts):
    result = world.run('ct', 'create', '-all', '-no-register')

    assert result.code == 0, result.err
    clone_of(world, world.vol1, 200, 'vm-200-disk-0.raw')
    clone_of(world, world.vol2, 201, 'vm-201-disk-1.raw')
    assert world.clones(world.vol1, 100) == [] and world.clones(world.vol1, 101) == []
    assert world.records(world.vol1, 100) == [] and world.records(world.vol1, 101) == []


def test_node_local_takes_only_the_containers_of_this_node(world, pve2):
    result = world.run('ct', 'create', '-all', '-node-local', '-pause', '-no-register')

    assert result.code == 0, result.err
    assert world.clones(world.vol1, 200) and not world.clones(world.vol1, 201)
    assert pve2.state(200) == 'RUNNING'


@pytest.mark.parametrize('option', ['-suspend', '-freeze'])
def test_no_suspend_and_no_freeze_for_a_container(world, cts, capsys, option):
    with pytest.raises(SystemExit) as stopped:
        world.run('ct', 'create', '-ct', 200, option)

    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f'unrecognized arguments: {option}')
    assert world.files(world.vol1, 200) == ['vm-200-disk-0.raw']


def test_a_container_without_an_ontap_disk_is_an_error(world, cts):
    world.pve.add_ct(202, 'local', node='pve1', status='stopped',
                     config={'rootfs': 'local-lvm:vm-202-disk-0,size=8G', 'mp0': '/dev/sdb1,mp=/mnt/raw'})

    result = world.run('ct', 'create', '-ct', 202)

    assert result.code == 1
    assert 'CT 202: skipping disk mp0 (/dev/sdb1): a device mount of the node' in result.err
    assert error_lines(result) == [f'ERROR: CT 202 has no disk on an ONTAP storage of {world.config}']


# -- what can go wrong on the way

def test_a_clone_whose_answer_is_lost_is_read_back(world, cts):
    world.a.lose_answer('POST', '/api/storage/file/clone')

    result = world.run('ct', 'create', '-ct', 201, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 0, result.err
    clone_of(world, world.vol1, 201, 'vm-201-disk-0.raw')


def test_a_clone_still_running_after_every_bound_is_named_as_unknown(world, pve2):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 4, match=cloning('images/200/vm-200-disk-0.raw'))

    result = world.run('ct', 'create', '-ct', 200, '-pause', '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith('ERROR: CT 200: snapshot ') and 'still unknown: file-clone ' in line
    assert pve2.state(200) == 'RUNNING'       # thawed long before: the clones come from the capture


def test_ctrl_c_while_frozen_thaws_the_container(world, pve2):
    code, err = signalled_run(world, ['ct', 'create', '-ct', 200, '-pause'], is_capture, signal.SIGINT,
                              script=pve2.launcher)

    assert code == 128 + signal.SIGINT, err
    assert err.splitlines()[-1].startswith('ERROR: stopped by SIGINT ('), err
    assert pve2.state(200) == 'RUNNING'
    assert pve2.calls()[:2] == ['lxc-info -s -n 200', 'lxc-freeze -n 200'] and 'lxc-unfreeze -n 200' in pve2.calls()


# -- a run that dies (SIGKILL) while it holds a container frozen

def kill_while_frozen(world, ct_node, cluster_dir):
    code, _ = signalled_run(world, ['ct', 'create', '-ct', 200, '-pause'], is_capture, signal.SIGKILL,
                            script=ct_node.launcher)
    assert code == -signal.SIGKILL and ct_node.state(200) == 'FROZEN'
    assert 'held-200 pause ' in world.lock_record(cluster_dir).read_text()


def test_the_next_run_thaws_a_container_a_run_that_died_left_frozen(world, pve2, cluster_dir, pmxcfs):
    kill_while_frozen(world, pve2, cluster_dir)

    result = world.run('-wait', 10, 'ct', 'create', '-ct', 200, '-no-register')

    assert result.code == 0, result.err
    assert re.search(r'WARNING: CT 200 was left frozen by a run that died \(pid \d+ on node \S+ since .*: thawed it',
                     result.err), result.err
    assert pve2.state(200) == 'RUNNING'
    assert 'held-' not in world.lock_record(cluster_dir).read_text()


def test_doctor_try_thaws_a_container_a_run_that_died_left_frozen(world, pve2, cluster_dir, pmxcfs):
    kill_while_frozen(world, pve2, cluster_dir)

    seen = world.run('doctor', '-storage', 'ONTAP01')
    tried = world.run('-wait', 10, 'doctor', '-storage', 'ONTAP01', '-try')

    (line,) = [line for line in seen.out.splitlines() if 'guests left held' in line]
    assert line.startswith('warn  ONTAP01 guests left held: CT 200 frozen by a run that died (pid '), line

    (line,) = [line for line in tried.out.splitlines() if 'guests left held' in line]
    assert line.startswith('ok    ONTAP01 guests left held: CT 200 was left frozen by a run that died'), line
    assert line.endswith('thawed it') and pve2.state(200) == 'RUNNING'


def test_a_dry_run_says_it_would_freeze_and_thaw_and_changes_nothing(world, pve2):
    before = world.state()

    result = world.run('-dry-run', 'ct', 'create', '-ct', 200, '-pause')

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    freeze, thaw = f'would run {pve2.programs["lxc-freeze"]} -n 200', f'would run {pve2.programs["lxc-unfreeze"]} -n 200'
    assert freeze in lines and thaw in lines and lines.index(freeze) < lines.index(thaw)
    assert 'would run pct rescan --vmid 200' in lines
    assert pve2.calls() == ['lxc-info -s -n 200'] and pve2.state(200) == 'RUNNING'
    assert world.state() == before


def test_a_vm_run_names_a_container_a_dead_run_left_frozen_as_a_ct_and_leaves_it(world, pve2, cluster_dir):
    """A dead run's lock record names CT 200 frozen (as ct create -pause notes it): vm create on the
    same volume names it as a CT, and leaves it to the next ct create of it, or doctor -try."""
    pve2.freeze(200)
    record = write_lock_record(world, cluster_dir, '4242 pve2 2024-03-13_14:41:00+0000 ct create -ct 200 -pause',
                               'held-200 pause 2024-03-13_14:41:00+0000')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert 'WARNING: CT 200 was left frozen by a run that died' in result.err
    assert 'the next run on it, or doctor -try, brings it back' in result.err
    assert pve2.state(200) == 'FROZEN' and 'held-200 pause ' in record.read_text()
