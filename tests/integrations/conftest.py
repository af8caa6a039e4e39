# plugin_project/ is a sample user project that test_testing_plugin.py copies into pytester's
# directory and runs there; collected here, its conftest (with pytest_plugins) would be an error.
collect_ignore = ["plugin_project"]
