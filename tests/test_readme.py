"""The README stays true: every `pve-ontap-snapshot` example in it runs, top to bottom, in
the sandbox's world (the snapshots the examples name are seeded as the original's); so does
every one in CONTRIBUTING.md and docs/, after the README's. Its config.ini example means what
its comments say, and every link between the documents leads somewhere."""

import datetime
import itertools
import json
import os
import re
import shlex
from pathlib import Path

import pytest
from world import seed_history

import pve_ontap_snapshot as tool

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
# The documents whose examples run, the README's first; and whose links are followed.
DOCUMENTS = [README, ROOT / 'CONTRIBUTING.md', *sorted((ROOT / 'docs').glob('*.md'))]
# What an example does here that is not success, by design (see the README's own words).
EXPECTED = {
    'vm restore -vm 100 -snapshot 2024-03-13_14:42:47+0000 -shutdown': (2, 'not asking without a terminal'),
    'storage restore -storage ONTAP01 -snapshot proxmox_snapshot_2024-03-13_14:42:47+0000':
        (1, 'VM 100, CT 200 running on it'),
    # the sandbox has no snapshot of ONTAP02, none with label daily, and VM snapshots of 2024
    'monitor': (2, ''),
    'monitor -storage ONTAP01 -label daily -warn 26h -crit 50h': (2, ''),
    'monitor -all -textfile .': (2, ''),
}


def examples(documents=DOCUMENTS):
    """Every command line of the documents' bash blocks, in order, without comments and pipes."""
    found = []
    blocks = [block for document in documents for block in re.findall(r'```bash\n(.*?)```', document.read_text(),
                                                                       re.DOTALL)]
    for block in blocks:
        for line in block.splitlines():
            line = line.split(' #')[0].split(' | ')[0].strip()
            if line.startswith('pve-ontap-snapshot '):
                found.append(line)
    return found


@pytest.fixture
def clock(monkeypatch):
    """A clock one second further at each stamp: examples run faster than stamps tick."""
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    ticks = (start + datetime.timedelta(seconds=n) for n in itertools.count())
    real = tool.Names.utc_stamp
    monkeypatch.setattr(tool.Names, 'utc_stamp', lambda now=None: real(now or next(ticks)))


def test_every_readme_example_runs_in_the_sandbox_world(world, clock, monkeypatch):
    monkeypatch.chdir(world.dir)     # as in the sandbox's directory (monitor -textfile . writes there)
    seed_history(world)
    assert len(examples([README])) >= 15
    for line in examples():
        argv = shlex.split(line)[1:]
        result = world.run(*argv)
        command = ' '.join(a for a in argv if a not in ('-output', 'json'))
        code, phrase = EXPECTED.get(command, (0, ''))
        assert result.code == code, f'{line}\n{result.err}'
        assert phrase in result.err, f'{line}\n{result.err}'
        if '-output' in argv:
            json.loads(result.out)


@pytest.mark.parametrize('text', [README.read_text().split('```ini\n')[1].split('```')[0],
                                  (README.parent / 'config.ini.example').read_text()])
def test_the_documented_config_means_what_its_comments_say(tmp_path, text):
    """configparser keeps a `#` after a value as part of it: the examples must not rely on one."""
    ca = tmp_path / 'pve-root-ca.pem'
    ca.write_text('')
    path = tmp_path / 'config.ini'
    path.write_text(text.replace('/etc/pve/pve-root-ca.pem', str(ca)).replace('# [defaults]', '[defaults]')
                    .replace('# connect_timeout', 'connect_timeout'))
    config = tool.ConfigFile.read(str(path))
    assert config.proxmox.host == '127.0.0.1:8006' and config.proxmox.verify == str(ca)
    assert config.storages['ONTAP01'].host == '192.168.38.50' and config.storages['ONTAP01'].svm == 'svm1'
    assert config.storages['ONTAP01'].verify is True
    assert config.timeouts.connect == 10


def slugs(text):
    """The anchors GitHub gives a Markdown text's headings: lower case, punctuation but `-` and
    `_` dropped, blanks as `-`, a repeated one numbered (`-1`, `-2`)."""
    seen, found = {}, set()
    for heading in re.findall(r'^#{1,6} (.+)$', re.sub(r'```.*?```', '', text, flags=re.DOTALL), re.MULTILINE):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        found.add(f'{slug}-{seen[slug]}' if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize('document', DOCUMENTS, ids=lambda path: path.name)
def test_every_link_between_the_documents_leads_somewhere(document):
    """A table of contents, a `see [Locks](#locks)`, a link to CONTRIBUTING.md#ci: each names a
    file of the repository, and a heading there."""
    broken = []
    for link in re.findall(r'\]\(([^)\s]+)\)', document.read_text()):
        if re.match(r'[a-z]+:', link):
            continue
        path, _, anchor = link.partition('#')
        target = Path(os.path.normpath(document.parent / path)) if path else document
        if not target.exists() or anchor and anchor not in slugs(target.read_text()):
            broken.append(link)
    assert broken == []
