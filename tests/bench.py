"""Benchmark: round trips and wall time of each command against the test world.

    python tests/bench.py [--latency SECONDS] [--snapshots N]

Builds the world of tests/world.py, adds a fixed latency to every request on both sides
(default 20 ms), then runs each command once and prints, per command, the requests sent
to ONTAP and to PVE, the wall time, and the target from the project's issue where there
is one. For `vm create -suspend` and `-pause` it also prints the pause window (suspend task
done -> start or resume issued), and at the end the time of one bash tab completion as a
whole process.
Numbers, not assertions: tests never time anything.
"""

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from world import ServedPve, World, populate, start_emulators, write_disk

import pve_ontap_snapshot as tool

SCRIPT = Path(__file__).resolve().parent.parent / 'pve_ontap_snapshot.py'


def add_bench_vms(world, snapshots):
    """VMs 200 to 203 with four disks each, two on each cluster (203 stopped, the others
    running); a storage with many snapshots."""
    for vmid in (200, 201, 202, 203):
        config = {}
        for n, (key, sid, vol) in enumerate((('scsi0', 'ONTAP01', world.vol1), ('scsi1', 'ONTAP01', world.vol1),
                                             ('scsi2', 'ONTAP02', world.vol2), ('scsi3', 'ONTAP02', world.vol2))):
            name = f'vm-{vmid}-disk-{n}.raw'
            write_disk(vol, vmid, name, size=1 << 20)
            config[key] = f'{sid}:{vmid}/{name},size=1M'
        world.pve.add_vm(vmid, f'bench{vmid}', node='pve1', status='stopped' if vmid == 203 else 'running',
                         config=config)
    world.a.add_volume('bench_snapshots', svm='svm1')
    for n in range(snapshots):
        world.a.add_snapshot('bench_snapshots', f'proxmox_snapshot_2024-01-01_00:{n // 60:02d}:{n % 60:02d}+0000')
    world.pve.storages['BENCH'] = {'type': 'nfs', 'server': '127.0.0.1', 'export': '/bench_snapshots',
                                   'path': '/mnt/pve/BENCH', 'content': 'images', 'files': set(), 'volumes': {}}
    section = world.config.read_text().split('[ONTAP02]')[0].split('[ONTAP01]')[1]
    world.config.write_text(world.config.read_text() + f'[BENCH]{section}')


class PauseWindow:
    """Times the pause of vm create -suspend or -pause: suspend task done -> start or resume issued."""

    def __init__(self):
        self.marks = {}
        self._power = tool.pve_vm_power

    def __enter__(self):
        def timed(pve, vm, action, **params):
            if action in ('start', 'resume'):
                self.marks['start'] = time.monotonic()
            self._power(pve, vm, action, **params)
            if action == 'suspend':
                self.marks['suspended'] = time.monotonic()
        tool.pve_vm_power = timed
        return self

    def __exit__(self, *exc):
        tool.pve_vm_power = self._power

    @property
    def seconds(self):
        return self.marks['start'] - self.marks['suspended']


def measure(world, argv):
    """(ONTAP requests, PVE requests, seconds, exit code) of one command."""
    counts = len(world.a.requests) + len(world.b.requests), len(world.pve.requests)
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = tool.main(['-config', str(world.config), '-loglevel', 'warn'] + [str(a) for a in argv])
    elapsed = time.monotonic() - started
    return (len(world.a.requests) + len(world.b.requests) - counts[0], len(world.pve.requests) - counts[1],
            elapsed, code)


def completion_seconds(config, runs=5):
    """Median wall time of one tab completion of `-storage` as a whole process."""
    line = f'pve-ontap-snapshot -config {config} storage list -storage O'
    env = dict(os.environ, _ARGCOMPLETE='1', COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=os.devnull)
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, str(SCRIPT)], env=env, check=True, capture_output=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--latency', type=float, default=0.02, help='seconds added to every request (0.02)')
    parser.add_argument('--snapshots', type=int, default=1000, help='snapshots of the volume behind BENCH (1000)')
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix='pve-ontap-bench-'))
    served = ServedPve(directory, time_scale=1.0)
    a, b = start_emulators(directory)
    try:
        populate(served.pve, a, b)
        world = World(served.pve, served.cafile, a, b, directory)
        world.write_config(defaults='local_lock = yes\n')      # off a PVE node: this machine's lock
        add_bench_vms(world, args.snapshots)
        for emu in (a, b):
            emu.latency = args.latency
        served.pve.slow_network(args.latency)

        rows = []
        snapshot = 'proxmox_snapshot_2024-01-01_00:00:00+0000'
        plan = [
            ('vm create -vm 200 (running; 4 disks, 2 clusters)', ['vm', 'create', '-vm', 200], 16),
            ('vm create -vm 203 (stopped; same shape)', ['vm', 'create', '-vm', 203], 12),
            ('vm create -vm 201 -suspend', ['vm', 'create', '-vm', 201, '-suspend'], None),
            ('vm create -vm 202 -pause', ['vm', 'create', '-vm', 202, '-pause'], None),
            ('vm list -vm 200', ['vm', 'list', '-vm', 200], None),
            ('storage create', ['storage', 'create', '-storage', 'ONTAP01'], 4),
            ('storage list', ['storage', 'list', '-storage', 'ONTAP01'], 4),
            (f'storage list ({args.snapshots} snapshots)', ['storage', 'list', '-storage', 'BENCH'], None),
            ('storage delete', ['storage', 'delete', '-storage', 'BENCH', '-snapshot', snapshot], 4),
            ('storage mount', ['storage', 'mount', '-storage', 'BENCH', '-snapshot',
                               'proxmox_snapshot_2024-01-01_00:00:01+0000'], None),
            ('storage unmount', ['storage', 'unmount', '-storage', 'BENCH-CLONE'], None),
        ]
        windows = {}
        for label, command, target in plan:
            with PauseWindow() as pause:
                ontap, pve, seconds, code = measure(world, command)
            for mode in ('-suspend', '-pause'):
                if mode in command:
                    windows[mode] = pause.seconds
            rows.append((label, ontap, pve, ontap + pve, target, seconds, code))
        completion = completion_seconds(world.config)
    finally:
        a.stop()
        b.stop()
        served.stop()

    print(f'latency {args.latency * 1000:.0f} ms per request on both sides\n')
    print(f'{"command":50} {"ONTAP":>5} {"PVE":>4} {"all":>4} {"target":>6} {"wall":>8}  exit')
    for label, ontap, pve, total, target, seconds, code in rows:
        print(f'{label:50} {ontap:5d} {pve:4d} {total:4d} {"≤" + str(target) if target else "":>6} '
              f'{seconds * 1000:6.0f} ms  {code}')
    print(f'\npause window of vm create -suspend (suspend done -> start issued): {windows["-suspend"] * 1000:.0f} ms')
    print(f'pause window of vm create -pause (suspend done -> resume issued): {windows["-pause"] * 1000:.0f} ms')
    print(f'tab completion of -storage, whole process (median of 5): {completion * 1000:.0f} ms')
    return 0 if all(row[-1] == 0 for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
