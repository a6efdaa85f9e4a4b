"""What the Debian package takes from pyproject.toml, the one place that names the version:

    python3 packaging/metadata.py version          0.1.0, as pyproject.toml gives it
    python3 packaging/metadata.py debian-version   the same as Debian orders versions (0.2.0rc1: 0.2.0~rc1)
    python3 packaging/metadata.py dist-info DIR    DIR/pve_ontap_snapshot-<version>.dist-info/, so that
                                                   importlib.metadata (and so -version) finds the version
"""

import os
import re
import sys
import tomllib

PYPROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pyproject.toml')


def project():
    with open(PYPROJECT, 'rb') as file:
        return tomllib.load(file)['project']


def debian_version(version):
    """PEP 440 pre- and dev releases sort before their release; in Debian only with a tilde."""
    return re.sub(r'\.?(a|b|rc|dev)(\d+)', r'~\1\2', version)


def metadata(project):
    """Core metadata (packaging.python.org, "Core metadata specifications", 2.1): the fields
    a reader of an installed package looks for."""
    lines = ['Metadata-Version: 2.1', f'Name: {project["name"]}', f'Version: {project["version"]}',
             f'Summary: {project["description"]}', f'License: {project["license"]}',
             f'Requires-Python: {project["requires-python"]}']
    lines += [f'Requires-Dist: {requirement}' for requirement in project['dependencies']]
    return '\n'.join(lines) + '\n'


def write_dist_info(directory, project):
    name = project['name'].replace('-', '_')
    info = os.path.join(directory, f'{name}-{project["version"]}.dist-info')
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, 'METADATA'), 'w') as file:
        file.write(metadata(project))


def main(argv):
    if argv == ['version']:
        print(project()['version'])
    elif argv == ['debian-version']:
        print(debian_version(project()['version']))
    elif len(argv) == 2 and argv[0] == 'dist-info':
        write_dist_info(argv[1], project())
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
