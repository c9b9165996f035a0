#!/bin/bash
# The main job, end to end on this machine: install, provision the two-host lab, boot a guest with a workload on
# walm-src, live-migrate it to walm-dst with playbooks/migrate_vm.yml and print the result. Root, Debian 12/13.
#   WALM_DEMO_WORKLOAD=wset WALM_DEMO_ARGS='{"wset_mib": 128, "rate_mib_s": 20}' scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
workload="${WALM_DEMO_WORKLOAD:-wset}"
args="${WALM_DEMO_ARGS:-{\"wset_mib\": 128, \"rate_mib_s\": 20\}}"
result="$PWD/results/demo-migration.json"
ap=.venv/bin/ansible-playbook

bash scripts/install.sh
$ap playbooks/lab_setup.yml
# A clean slate: the demo VM must not run anywhere before it is started on walm-src.
for host in walm-src walm-dst; do
    $ap playbooks/vm_start.yml -e walm_host=$host -e lab_vm_name=walm-demo -e lab_vm_state=stopped >/dev/null
done
$ap playbooks/vm_start.yml -e walm_host=walm-src -e lab_vm_name=walm-demo -e lab_vm_workload="$workload" \
    -e "{\"lab_vm_workload_args\": $args}"
sleep 5  # let the workload run before the migration starts
mkdir -p results
$ap playbooks/migrate_vm.yml -e walm_vm_name=walm-demo -e walm_source=walm-src -e walm_destination=walm-dst \
    -e walm_result_file="$result"
echo
.venv/bin/python scripts/show_result.py "$result"
echo
echo "The VM now runs on walm-dst; its console: /var/lib/walm-lab/hosts/walm-dst/run/walm-demo.console.log"
echo "Tear the lab down with: .venv/bin/ansible-playbook playbooks/lab_teardown.yml"
