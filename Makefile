# WALM: everything runs as root on Debian 12/13. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PLAYBOOK := cd $(CURDIR) && $(VENV)/bin/ansible-playbook
RESULT ?= $(CURDIR)/results/demo-migration.json
DEMO_WORKLOAD ?= wset
DEMO_WORKLOAD_ARGS ?= {"wset_mib": 128, "rate_mib_s": 20}

.PHONY: install lab lab-teardown demo test test-unit test-integration clean

install:
	bash scripts/install.sh $(VENV)

lab: install
	$(PLAYBOOK) playbooks/lab_setup.yml

lab-teardown:
	$(PLAYBOOK) playbooks/lab_teardown.yml

# Provision the lab, boot a guest with a workload on walm-src, migrate it to walm-dst, print the result.
demo: lab
	$(PLAYBOOK) playbooks/vm_start.yml -e walm_host=walm-src -e lab_vm_name=walm-demo \
	  -e lab_vm_workload=$(DEMO_WORKLOAD) -e '{"lab_vm_workload_args": $(DEMO_WORKLOAD_ARGS)}'
	sleep 5  # let the workload run before measuring the migration
	mkdir -p $(dir $(RESULT))
	$(PLAYBOOK) playbooks/migrate_vm.yml -e walm_vm_name=walm-demo -e walm_source=walm-src \
	  -e walm_destination=walm-dst -e walm_result_file=$(RESULT)
	@$(VENV)/bin/python scripts/show_result.py $(RESULT)

test: install
	$(VENV)/bin/python -m pytest -v -rs tests

test-unit: install
	$(VENV)/bin/python -m pytest -q tests/unit

clean: lab-teardown
	rm -rf results
