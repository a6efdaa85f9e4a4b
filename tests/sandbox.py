"""Try pve-ontap-snapshot end to end on this machine: emulated ONTAP + fakepve on 127.0.0.1.

    python tests/sandbox.py           run every command once and show what each one changed
    python tests/sandbox.py --serve   keep both servers running; try commands by hand

The world is the test suite's (tests/world.py): VM 100 running with disks on two ONTAP
clusters, VM 101 stopped, storages ONTAP01 and ONTAP02 in PVE; plus the snapshots the
README's examples name, as if the original tool had made them. After each command the
sandbox prints the changes it left: `+` added, `-` removed, in PVE and on both clusters
(disk files with the first bytes of their SHA-256, so a restore shows as changed bytes;
snapshots with their comment, so a hold shows).
"""

import argparse
import hashlib
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pytest
from world import (
    MARCH_SNAPSHOT,
    OLD_SNAPSHOT,
    ORIGINAL_STAMP,
    ServedPve,
    World,
    on_node_with_pmxcfs,
    populate,
    seed_history,
    start_emulators,
)

import pve_ontap_snapshot as tool


def state(world):
    """The world as a set of readable facts."""
    facts = set()
    for vm in world.pve.vms:
        facts.add(f'PVE VM {vm.vmid} is {vm.status}')
        facts.update(f'PVE VM {vm.vmid} {k}: {v}' for k, v in vm.config.items() if k.startswith('unused'))
        facts.update(f'PVE VM {vm.vmid} pending {k}: {v}' for k, v in vm.pending.items())
    facts.update(f'PVE storage {sid}' for sid in world.pve.storages)
    for cluster, emu in (('A', world.a), ('B', world.b)):
        for vol in emu.volumes:
            facts.add(f'ONTAP {cluster} volume {vol.name}')
            facts.update(f'ONTAP {cluster} {vol.name} snapshot {name}' + (f' "{snap.comment}"' if snap.comment else '')
                         for name, snap in vol.snapshots.items())
            for path in sorted(vol.path.rglob('*')):
                if path.is_file():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
                    facts.add(f'ONTAP {cluster} {vol.name}:/{path.relative_to(vol.path)} [{digest}]')
    return facts


def run(world, *argv):
    """Run one command as an admin would, then print what it changed."""
    argv = ['-config', str(world.config)] + [str(a) for a in argv]
    print(f'\n$ pve-ontap-snapshot {shlex.join(argv)}', flush=True)
    before = state(world)
    code = tool.main(argv)
    sys.stderr.flush()
    after = state(world)
    print(f'   -> exit code {code}')
    for sign, facts in (('-', before - after), ('+', after - before)):
        for fact in sorted(facts):
            print(f'   {sign} {fact}')
    if before == after:
        print('   (nothing changed)')
    return code


def new_stamps(world, kind, before):
    """Stamps of VM 100's sets of one kind on ONTAP01 that were not there `before`."""
    files = (tool.Names.snapshot_file('ONTAP01', 'images/100', name) for name in world.files(world.vol1, 100))
    return sorted({f.stamp for f in files if f and f.kind == kind} - before)


def new_ct_as_on_a_node(world, stamp):
    """ct restore -as-new writes the new CT's config into pmxcfs, so it runs on a node as root: here
    as on node pve1, its programs and its /etc/pve/nodes played by the sandbox's directory."""
    print('\nA new CT 301 from that snapshot of CT 201, as run on node pve1 (its config written into '
          'pmxcfs, played by the directory etc-pve/ of the sandbox):')
    with pytest.MonkeyPatch.context() as patch:
        nodes = on_node_with_pmxcfs(patch, world, world.dir)
        code = run(world, 'ct', 'restore', '-ct', 201, '-snapshot', stamp, '-as-new', 301)
    config = nodes / 'pve1' / 'lxc' / '301.conf'
    if config.exists():
        print(f'{config.relative_to(world.dir)}:\n' + config.read_text())
    return code or (0 if config.exists() else 1)


def demo(world):
    """Every command once, mostly the README's own examples; 0 if all went as expected."""
    disk = world.disk(world.vol1, 100, 'vm-100-disk-0.raw')
    original = disk.read_bytes()
    codes = [run(world, 'doctor', '-try'),
             run(world, 'storage', 'show', '-storage', 'ONTAP01'),
             run(world, 'vm', 'list', '-vm', 100),
             run(world, 'vm', 'create', '-vm', 100, '-suspend', '-keep', 7),
             run(world, 'storage', 'create', '-storage', 'ONTAP01', '-freeze', '-keep', 7),
             run(world, 'storage', 'hold', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT),
             run(world, 'storage', 'list', '-storage', 'ONTAP01'),
             run(world, 'vm', 'verify', '-vm', 100),
             run(world, 'storage', 'verify', '-storage', 'ONTAP01')]
    (stamp,) = new_stamps(world, 'snapshot', {ORIGINAL_STAMP})
    snapshot = max(world.vol1.snapshots)
    codes += [run(world, 'vm', 'hold', '-vm', 100, '-snapshot', stamp, '-reason', 'the sandbox holds it')]

    disk.write_bytes(b'a change after the snapshots')
    print('\n(vm-100-disk-0.raw overwritten; the restores below bring it back)')
    codes += [run(world, 'vm', 'restore', '-vm', 100, '-snapshot', stamp, '-shutdown', '-yes'),
              run(world, 'vm', 'list', '-vm', 100)]
    restored_from_set = disk.read_bytes() == original
    (undo,) = new_stamps(world, 'prerestore', set())
    codes += [run(world, 'vm', 'release', '-vm', 100, '-snapshot', stamp),
              run(world, 'vm', 'delete', '-vm', 100, '-snapshot', undo),
              run(world, 'vm', 'restore', '-vm', 100, '-storage-snapshot', snapshot, '-shutdown', '-yes'),
              run(world, 'storage', 'mount', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT),
              run(world, 'storage', 'mount', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT,
                  '-name', 'ONTAP01-MARCH'),
              run(world, 'storage', 'unmount', '-storage', 'ONTAP01-CLONE'),
              run(world, 'storage', 'unmount', '-storage', 'ONTAP01-MARCH'),
              run(world, '-dry-run', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT,
                  '-force'),
              run(world, 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT, '-force', '-yes'),
              run(world, 'storage', 'release', '-storage', 'ONTAP01', '-snapshot', MARCH_SNAPSHOT),
              run(world, 'storage', 'delete', '-storage', 'ONTAP01', '-snapshot', OLD_SNAPSHOT)]
    print('\nA new VM 111 from a snapshot of VM 101 (as for a VM destroyed since, or a copy to test an update on):')
    codes += [run(world, 'vm', 'restore', '-vm', 101, '-snapshot', ORIGINAL_STAMP, '-as-new', 111)]
    print('\nContainers: CT 201 (stopped; rootfs on ONTAP01, mp0 on ONTAP02) and CT 200 (running, shut down for it):')
    codes += [run(world, 'ct', 'create', '-ct', 201, '-keep', 7),
              run(world, 'ct', 'create', '-ct', 200, '-shutdown'),
              run(world, 'ct', 'list', '-ct', 201),
              run(world, 'ct', 'verify', '-ct', 201)]
    ct_disk = world.disk(world.vol1, 201, 'vm-201-disk-0.raw')
    ct_original = ct_disk.read_bytes()
    ct_disk.write_bytes(b'a change after the snapshot')
    print('\n(vm-201-disk-0.raw of CT 201 overwritten; ct restore brings it back)')
    (ct_stamp,) = world.vm_stamps(201)
    codes += [run(world, 'ct', 'restore', '-ct', 201, '-snapshot', ct_stamp, '-with-config', '-yes')]
    codes += [0 if ct_disk.read_bytes() == ct_original else 1]
    codes += [new_ct_as_on_a_node(world, ct_stamp)]
    print(f'\nvm-100-disk-0.raw came back byte for byte: from the VM snapshot {restored_from_set}, '
          f'at the end {disk.read_bytes() == original}')
    print('\nAnd a mistake, to show what an error looks like: an unknown VM.')
    mistake = run(world, 'vm', 'create', '-vm', 999)
    print('\nmonitor: ONTAP02 has no snapshot (CRITICAL), and the vm create above failed (WARNING); '
          'its metrics go to the sandbox directory:')
    verdict = run(world, 'monitor', '-vm', 100, 101, '-textfile', world.dir)
    return 0 if (not any(codes) and mistake == 1 and verdict == 2 and restored_from_set
                 and disk.read_bytes() == original) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--serve', action='store_true', help='keep the servers running until Ctrl-C')
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix='pve-ontap-sandbox-'))
    served = ServedPve(directory)
    a, b = start_emulators(directory)
    try:
        populate(served.pve, a, b)
        world = World(served.pve, served.cafile, a, b, directory)
        world.write_config(defaults='# off a PVE node, and alone: this node\'s lock is enough\nlocal_lock = yes\n')
        seed_history(world)
        print(f'fakepve at {served.pve.url}, ONTAP cluster A at {a.url}, cluster B at {b.url}')
        print(f'config: {world.config}')
        if not args.serve:
            code = demo(world)
            print('\nsandbox: every command ran as expected' if code == 0 else '\nsandbox: something went wrong')
            return code
        print(f'\nIn {directory} (where config.ini is) the README\'s examples run as written:')
        print(f'  cd {directory}')
        print('  pve-ontap-snapshot doctor')
        print('  pve-ontap-snapshot vm list -vm 100')
        print('  pve-ontap-snapshot vm create -vm 100 -pause -keep 7')
        print('  pve-ontap-snapshot storage create -storage ONTAP01 -freeze')
        print(f'  pve-ontap-snapshot storage mount -storage ONTAP01 -snapshot {OLD_SNAPSHOT}')
        print(f'  pve-ontap-snapshot vm restore -vm 101 -snapshot {ORIGINAL_STAMP} -as-new 111')
        print('  pve-ontap-snapshot vm verify -all')
        print('  pve-ontap-snapshot ct create -ct 201 -keep 7')
        print('Disk files live under cluster-a/ and cluster-b/ there. Ctrl-C stops both servers.', flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        a.stop()
        b.stop()
        served.stop()


if __name__ == '__main__':
    sys.exit(main())
