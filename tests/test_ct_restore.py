"""ct restore: a container's disks (-with-config: and the settings of its config an ordinary user
may set) back to a CT snapshot or to a storage snapshot, in place, after its live disks are kept
as a pre-restore snapshot, as vm restore does for a VM."""

import re

import pytest
from world import error_lines, on_node_with_pmxcfs, write_pmxcfs_configs

import pve_ontap_snapshot as tool


def overwrite(world, vol, ctid, name):
    """Write over a disk of the CT; its bytes before."""
    disk = world.disk(vol, ctid, name)
    before = disk.read_bytes()
    disk.write_bytes(b'written after the snapshot')
    return before


def test_a_stopped_container_gets_its_disks_back_on_both_clusters(world, cts):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    root, mount = (overwrite(world, world.vol1, 201, 'vm-201-disk-0.raw'),
                   overwrite(world, world.vol2, 201, 'vm-201-disk-1.raw'))

    result = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-yes')

    assert result.code == 0, result.err
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == root
    assert world.disk(world.vol2, 201, 'vm-201-disk-1.raw').read_bytes() == mount
    undo = [name for name in world.clones(world.vol1, 201) if '-prerestore-' in name]
    assert len(undo) == 1 and world.disk(world.vol1, 201, undo[0]).read_bytes() == b'written after the snapshot'
    assert re.search(rf'CT 201: disks mp0, rootfs restored from snapshot {re.escape(stamp)}; undo point', result.err)
    assert world.pve.ct(201).status == 'stopped'


def test_a_running_container_is_refused_without_shutdown_and_restored_with_it(world, cts):
    stamp = world.vm_snapshot(200, '-no-register', kind='ct')
    before = overwrite(world, world.vol1, 200, 'vm-200-disk-0.raw')

    refused = world.run('ct', 'restore', '-ct', 200, '-snapshot', stamp, '-yes')
    assert refused.code == 1
    assert error_lines(refused) == ['ERROR: CT 200 is running: shut it down first, or add -shutdown']
    assert world.disk(world.vol1, 200, 'vm-200-disk-0.raw').read_bytes() == b'written after the snapshot'

    result = world.run('ct', 'restore', '-ct', 200, '-snapshot', stamp, '-shutdown', '-yes')

    assert result.code == 0, result.err
    assert world.disk(world.vol1, 200, 'vm-200-disk-0.raw').read_bytes() == before
    posts = [path.rsplit('/', 1)[1] for method, path, _ in world.pve.requests
             if method == 'POST' and '/nodes/pve2/lxc/200/status/' in path]
    assert posts == ['shutdown', 'start'] and world.pve.ct(200).status == 'running'


def test_a_container_restored_from_a_storage_snapshot(world, cts):
    made = world.run('storage', 'create', '-storage', 'ONTAP01')
    assert made.code == 0, made.err
    (name,) = world.vol1.snapshots
    before = overwrite(world, world.vol1, 201, 'vm-201-disk-0.raw')

    result = world.run('ct', 'restore', '-ct', 201, '-storage-snapshot', name, '-yes')

    assert result.code == 0, result.err
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == before
    assert f'storage snapshot {name} has no copy of disk mp0' in result.err     # mp0 is on ONTAP02


def test_with_config_puts_back_only_what_an_ordinary_user_may_set(world, cts):
    """The saved config is read from the datastore, which others than root may write: what only
    root@pam may set (a hookscript, a bind mount, a device, features but nesting) never comes back
    from it, whatever it says."""
    ct = world.pve.ct(201)
    root_only = {'features': 'keyctl=1', 'hookscript': 'local:snippets/x.sh', 'mp1': '/etc,mp=/host-etc',
                 'dev0': '/dev/kvm'}
    ct.config.update(memory=1024, net0='name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,type=veth', **root_only)
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    for key in [*root_only, 'net0']:
        del ct.config[key]
    ct.config.update(memory=2048, hostname='changed')

    result = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-with-config', '-yes')

    assert result.code == 0, result.err
    config = world.pve.ct(201).config
    assert (str(config['memory']), config['hostname']) == ('1024', 'mail')
    assert config['net0'].startswith('name=eth0,bridge=vmbr0')
    assert not set(root_only) & set(config)
    for key in root_only:
        assert f'  {key}: kept as it is (' in result.err


@pytest.mark.parametrize('key, value, why', [
    ('lxc.apparmor.profile', 'unconfined', 'only root@pam may set it'),
    ('hookscript', 'local:snippets/evil.sh', 'only root@pam may set it'),
    ('mp1', '/,mp=/host', 'a bind mount or device of the host: only root@pam may set it'),
    ('dev0', '/dev/sda', 'only root@pam may set it'),
    ('features', 'nesting=1,keyctl=1', 'a feature other than nesting: only root@pam may set it'),
    ('rootfs', 'ONTAP01:100/vm-100-disk-0.raw,size=8G', 'a volume of guest 100, not of 201'),
    ('entrypoint', '/bin/sh', 'a setting unknown to this tool'),
])
def test_a_setting_a_saved_ct_config_may_not_give_back(key, value, why):
    assert tool.RestoreRules.setting_risk(key, value, 201, tool.Kind.CT) == why


@pytest.mark.parametrize('key, value', [('memory', '1024'), ('net0', 'name=eth0,bridge=vmbr0'), ('hostname', 'x'),
                                        ('features', 'nesting=1'), ('mp0', 'ONTAP02:201/vm-201-disk-1.raw,mp=/m'),
                                        ('onboot', '1'), ('tags', 'a;b')])
def test_a_setting_a_saved_ct_config_gives_back(key, value):
    assert tool.RestoreRules.setting_risk(key, value, 201, tool.Kind.CT) is None


# -- -as-new: a new CT, its config written into pmxcfs on this node

@pytest.fixture
def pmxcfs_nodes(world, cts, monkeypatch, tmp_path):
    """This run on node pve1, as root, its pmxcfs guest configs a directory of the test's: returns it."""
    return on_node_with_pmxcfs(monkeypatch, world, tmp_path)


def test_as_new_makes_a_stopped_ct_with_copies_new_macs_and_its_id_mapping(world, pmxcfs_nodes):
    ct = world.pve.ct(201)
    ct.config.update(net0='name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth', onboot=1,
                     hookscript='local:snippets/x.sh', unprivileged=1)
    write_pmxcfs_configs(world.pve, pmxcfs_nodes.parent)
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')

    result = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 301)

    assert result.code == 0, result.err
    config = dict(line.split(': ', 1) for line in (pmxcfs_nodes / 'pve1' / 'lxc' / '301.conf').read_text().splitlines())
    assert config['rootfs'].startswith('ONTAP01:301/vm-301-disk-')
    assert config['mp0'].startswith('ONTAP02:301/vm-301-disk-') and ',mp=/var/mail' in config['mp0']
    assert config['unprivileged'] == '1' and config['hostname'] == 'mail'
    assert 'hwaddr=BC:24:11:00:00:01' not in config['net0'] and re.search(r'hwaddr=BC:24:11(:[0-9A-F]{2}){3}',
                                                                           config['net0'])
    assert 'onboot' not in config and 'hookscript' not in config
    assert '  hookscript: "local:snippets/x.sh" (only root@pam may set it)' in result.err
    root = config['rootfs'].split(',')[0].split('/')[1]
    assert world.disk(world.vol1, 301, root).read_bytes() == world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes()
    assert world.pve.ct(201).status == 'stopped' and 'CT 301 created on node pve1' in result.err


def test_as_new_never_makes_a_privileged_container_from_a_saved_config(world, pmxcfs_nodes):
    world.pve.ct(201).config['unprivileged'] = 0
    write_pmxcfs_configs(world.pve, pmxcfs_nodes.parent)
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    before = world.state()

    result = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 301)

    assert result.code == 1
    assert 'is of a privileged container, which only a user with Sys.Modify on / may create' in error_lines(result)[0]
    assert world.state() == before and not (pmxcfs_nodes / 'pve1' / 'lxc' / '301.conf').exists()


def test_as_new_refuses_an_id_taken_on_any_node(world, pmxcfs_nodes):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    (pmxcfs_nodes / 'pve2' / 'qemu-server').mkdir(parents=True, exist_ok=True)
    (pmxcfs_nodes / 'pve2' / 'qemu-server' / '305.conf').write_text('memory: 512\n')
    before = world.state()

    taken_in_pve = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 100)
    taken_in_pmxcfs = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 305)

    assert taken_in_pve.code == 1 and 'VM 100 web already exists on node pve1' in error_lines(taken_in_pve)[0]
    assert taken_in_pmxcfs.code == 1
    assert error_lines(taken_in_pmxcfs) == [
        f'ERROR: {pmxcfs_nodes}/pve2/qemu-server/305.conf exists: id 305 is taken; choose another id for -as-new']
    assert not (pmxcfs_nodes / 'pve1' / 'lxc' / '305.conf').exists()
    assert world.state() == before and world.files(world.vol1, 305) == []


def test_as_new_off_a_node_is_refused_in_one_line(world, cts):
    stamp = world.vm_snapshot(201, '-no-register', kind='ct')
    before = world.state()

    result = world.run('ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 301)

    assert result.code == 1
    assert error_lines(result)[0].startswith("ERROR: ct restore -as-new writes CT 301's config into pmxcfs (")
    assert error_lines(result)[0].endswith('run it on a node')
    assert world.state() == before


def test_an_overwrite_whose_answer_is_lost_leaves_the_ct_stopped_and_names_the_undo_point(world, cts):
    stamp = world.vm_snapshot(200, '-no-register', kind='ct')
    before = overwrite(world, world.vol1, 200, 'vm-200-disk-0.raw')
    world.a.lose_answer('POST', '/api/storage/file/clone',
                        match={'destination_path': 'images/200/vm-200-disk-0.raw', 'overwrite_destination': True})

    result = world.run('ct', 'restore', '-ct', 200, '-snapshot', stamp, '-shutdown', '-yes')
    world.a.wait_for_jobs()

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'CT 200: restore not finished: rootfs unknown' in line and 'CT left stopped' in line
    (undo,) = [name for name in world.clones(world.vol1, 200) if '-prerestore-' in name]
    assert f'ct restore -ct 200 -snapshot {undo.split("-prerestore-")[1][:24]}' in line
    assert world.disk(world.vol1, 200, 'vm-200-disk-0.raw').read_bytes() == before     # ONTAP did it
    assert world.pve.ct(200).status == 'stopped'                                       # nothing started on a guess
