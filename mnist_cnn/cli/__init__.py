"""How the project's commands talk to people: argument parsing, error messages,
params checks that name the key, and process control (stage locks, stopping
when the parent is gone).

Nothing here determines a result, so no stage depends on it in dvc.yaml:
rewording a message retrains nothing. Library code outside this package never
imports it (tests/test_dvc_yaml.py checks both).
"""
