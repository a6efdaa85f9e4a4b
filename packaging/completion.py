"""Tab completion of the installed pve-ontap-snapshot, without importing the tool.

argcomplete answers a <TAB> by running the command with _ARGCOMPLETE set and asking its
argparse parser what may come next. Importing pve_ontap_snapshot for that costs more than
argparse and argcomplete together (the standard library a run needs, its dataclasses, its
4,000 lines), so the Debian package's launcher asks a copy instead, made at build time:

    python3 packaging/completion.py save > saved_parser.py

saves the tree of commands and options that build_parser() makes, as data, and copies the
tool's completers from its source, with every function, constant and exception class they
use. complete() rebuilds a parser from that with plain argparse actions and hands it to
argcomplete, so a <TAB> imports argparse, argcomplete and what the completers import, and
nothing else. tests/test_completion.py checks that its answers are the tool's own.
"""

import argparse
import os
import sys

# What main() hands to argcomplete.autocomplete() besides the parser.
DEFAULT_COMPLETER = 'complete_nothing'


class SavedParser(argparse.ArgumentParser):
    """Parses as the tool's CommandLine does: no prefix matching of options."""

    def _get_option_tuples(self, option_string):
        return []

    def _get_formatter(self):
        # argparse makes a formatter for each option it adds, sized to the terminal (importing
        # shutil for that): help is never shown here, so one fixed width will do.
        return argparse.HelpFormatter(self.prog, width=80)


def complete():
    """Answer argcomplete's request from saved_parser (argcomplete then exits the process).
    Without argcomplete or the saved parser, return: the tool answers itself."""
    try:
        import argcomplete
        import saved_parser
    except ImportError:
        return
    words = {word.strip('\'"') for word in os.environ.get('COMP_LINE', '').split()}
    parser = rebuild(saved_parser.TREE, saved_parser, words)
    argcomplete.autocomplete(parser, default_completer=getattr(saved_parser, DEFAULT_COMPLETER))


def rebuild(tree, completers, words, path='', parser=None):
    """The argparse parser of the saved command `path` ('' the tool itself, 'vm create' a
    leaf): its actions in their order, completers by name, and its commands' parsers. Only
    the commands named among `words` (the line being completed) get their options: argparse
    never reaches the others, and argcomplete needs only their names."""
    node = tree[path]
    if parser is None:
        parser = SavedParser(prog=node['prog'], add_help=False, allow_abbrev=False)
    groups = [parser.add_mutually_exclusive_group(required=required) for required in node['groups']]
    for saved in node['actions']:
        if 'commands' in saved:
            commands = parser.add_subparsers(dest=saved['dest'], required=saved.get('required', False))
            for name in saved['commands']:
                child = f'{path} {name}'.lstrip()
                command = commands.add_parser(name, prog=tree[child]['prog'], add_help=False, allow_abbrev=False)
                if name in words:
                    rebuild(tree, completers, words, child, command)
            continue
        owner = groups[saved['group']] if 'group' in saved else parser
        if saved.get('nargs') == 0:
            kwargs = {'action': 'store_true'}
        else:
            kwargs = {'nargs': saved.get('nargs'), 'choices': saved.get('choices')}
        if saved['flags']:
            kwargs.update(dest=saved['dest'], required=saved.get('required', False))
        if saved.get('suppressed'):
            kwargs['help'] = argparse.SUPPRESS
        if saved.get('no_default'):
            kwargs['default'] = argparse.SUPPRESS
        action = owner.add_argument(*saved['flags'] or [saved['dest']], **kwargs)
        if 'completer' in saved:
            action.completer = getattr(completers, saved['completer'])
    return parser


# ---- At build time: save the tool's parser and completers --------------------------------

def saved_tree(parser, completer_names, path='', tree=None):
    """Each parser as data, by its command path: its actions in order, with what completion
    needs of each (flags, how many values, choices, completer, exclusive group, default)."""
    tree = {} if tree is None else tree
    groups = parser._mutually_exclusive_groups
    node = tree[path] = {'prog': parser.prog, 'groups': [group.required for group in groups], 'actions': []}
    for action in parser._actions:
        saved = {'flags': list(action.option_strings), 'dest': action.dest}
        if isinstance(action, argparse._SubParsersAction):
            saved['commands'] = list(action.choices)
            for name, child in action.choices.items():
                saved_tree(child, completer_names, f'{path} {name}'.lstrip(), tree)
        else:
            saved['nargs'] = action.nargs
            saved['choices'] = list(action.choices) if action.choices is not None else None
            saved['suppressed'] = action.help == argparse.SUPPRESS
            # A command's copy of a global option sets nothing unless given, or it would hide
            # the value given before the command.
            saved['no_default'] = action.default == argparse.SUPPRESS
            completer = getattr(action, 'completer', None)
            if completer is not None:
                saved['completer'] = completer.__name__
                completer_names.add(completer.__name__)
            saved['group'] = next((n for n, group in enumerate(groups) if action in group._group_actions), None)
        saved['required'] = action.required
        node['actions'].append({key: value for key, value in saved.items()
                                if key == 'flags' or not (value is None or value is False)})
    return tree


def global_names(source):
    """The global names a piece of source reads (its own definitions left out)."""
    import dis
    code = compile(source, '<copied>', 'exec')
    pending, found, defined = [code], [], set()
    while pending:
        code = pending.pop()
        for instruction in dis.get_instructions(code):
            if instruction.opname in ('LOAD_GLOBAL', 'LOAD_NAME') and instruction.argval not in found:
                found.append(instruction.argval)
            elif instruction.opname == 'STORE_NAME':     # a definition, or a class attribute
                defined.add(instruction.argval)
        pending.extend(const for const in code.co_consts if hasattr(const, 'co_code'))
    return [name for name in found if name not in defined and not name.startswith('__')]


def copied_definitions(tool, names):
    """(imports, constants, sources by line) of everything `names` need, from the tool."""
    import ast
    import builtins
    import inspect
    import types
    imports, constants, sources = {}, {}, {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in imports or name in constants or name in sources:
            continue
        if not hasattr(tool, name):
            if hasattr(builtins, name):
                continue
            raise SystemExit(f'completion.py: the completers use {name!r}, which {tool.__name__} does not define')
        value = getattr(tool, name)
        if isinstance(value, types.ModuleType):
            imports[name] = value.__name__
        elif inspect.isfunction(value) or inspect.isclass(value):
            if inspect.getmodule(value) is not tool:
                raise SystemExit(f'completion.py: the completers use {name!r}, imported into {tool.__name__}: '
                                 'import its module instead')
            source, line = inspect.getsourcelines(value)
            sources[name] = (line, ''.join(source))
            pending.extend(global_names(sources[name][1]))
        elif ast.literal_eval(repr(value)) == value:
            constants[name] = value
        else:
            raise SystemExit(f'completion.py: the completers use {name!r}, which cannot be copied')
    return imports, constants, [source for _, source in sorted(sources.values())]


def save_source(tool):
    """The source of saved_parser.py for the tool module `tool`."""
    completer_names = {DEFAULT_COMPLETER}
    tree = saved_tree(tool.build_parser(), completer_names)
    imports, constants, sources = copied_definitions(tool, sorted(completer_names))
    lines = [f'"""The parser and completers of pve-ontap-snapshot {tool.tool_version()}, saved from',
             f'{tool.__name__}.py by packaging/completion.py for tab completion. Generated: do not edit."""', '']
    lines += [f'import {module}' if module == name else f'import {module} as {name}'
              for name, module in sorted(imports.items())]
    lines += ['', '# Copied from the tool, with what they use.']
    lines += [f'{name} = {value!r}' for name, value in sorted(constants.items())]
    for source in sources:
        lines += ['', '', source.rstrip('\n')]
    lines += ['', '', '# The parsers that build_parser() makes, by command.', 'TREE = {']
    for path, node in tree.items():
        lines.append(f'    {path!r}: {{')
        lines += [f'        {key!r}: {value!r},' for key, value in node.items() if key != 'actions']
        lines += ["        'actions': ["] + [f'            {action!r},' for action in node['actions']] + ['        ],']
        lines.append('    },')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def main(argv):
    """`completion.py save [TOOL_DIR]`: print saved_parser.py for the tool in TOOL_DIR
    (default: this repository)."""
    if len(argv) not in (1, 2) or argv[0] != 'save':
        sys.exit('usage: completion.py save [TOOL_DIR]')
    sys.path.insert(0, argv[1] if len(argv) == 2 else os.path.join(os.path.dirname(__file__), '..'))
    import pve_ontap_snapshot
    sys.stdout.write(save_source(pve_ontap_snapshot))


if __name__ == '__main__':
    main(sys.argv[1:])
