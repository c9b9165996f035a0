#!/usr/bin/env bash
# The main job, end to end on this machine: install, provision the three-host lab, boot three guests with different
# workloads on walm-src (idle, CPU-bound, a writer faster than the link), and empty walm-src into walm-dst and
# walm-dst2 with playbooks/evacuate_host.yml: every VM probed, decided, ordered, migrated and verified; the summary
# is printed and written to results/demo-evacuation.json. Root, Debian 12/13.
#   scripts/demo.sh                 # the evacuation
#   WALM_DEMO_POLICY=naive scripts/demo.sh   # the same with the peers' plan (listing order, all pre-copy)
set -euo pipefail
cd "$(dirname "$0")/.."
policy="${WALM_DEMO_POLICY:-walm}"
result="$PWD/results/demo-evacuation.json"
ap=.venv/bin/ansible-playbook

bash scripts/install.sh
$ap playbooks/lab_setup.yml
# name workload workload-args tap mac address: each guest needs its own tap, MAC and address on the shared host.
vms=(
    "demo-idle idle {} tap0 52:54:00:77:00:81 10.77.0.121/24"
    "demo-cpu cpu {} tap1 52:54:00:77:00:82 10.77.0.122/24"
    'demo-writer wset {"wset_mib":256,"rate_mib_s":200} tap2 52:54:00:77:00:83 10.77.0.123/24'
)
# A clean slate: no demo VM may run anywhere before it is started on walm-src.
for vm in "${vms[@]}"; do
    read -r name _ <<<"$vm"
    for host in walm-src walm-dst walm-dst2; do
        $ap playbooks/vm_start.yml -e walm_host=$host -e lab_vm_name="$name" -e lab_vm_state=stopped >/dev/null
    done
done
for vm in "${vms[@]}"; do
    read -r name workload args tap mac ip <<<"$vm"
    $ap playbooks/vm_start.yml -e walm_host=walm-src -e lab_vm_name="$name" -e lab_vm_workload="$workload" \
        -e "{\"lab_vm_workload_args\": $args}" -e lab_vm_tap="$tap" -e lab_vm_mac="$mac" -e lab_vm_ip="$ip" \
        >/dev/null
    echo "started $name ($workload) on walm-src"
done
sleep 5  # let the workloads run before they are measured
mkdir -p results
$ap playbooks/evacuate_host.yml -e walm_source=walm-src -e '{"walm_destinations": ["walm-dst", "walm-dst2"]}' \
    -e walm_evacuate_policy="$policy" -e walm_timeout_s=60 -e walm_result_file="$result"
echo
echo "Summary written to $result. The VMs run on walm-dst and walm-dst2; their consoles:"
echo "  /var/lib/walm-lab/hosts/walm-dst*/run/demo-*.console.log"
echo "Tear the lab down with: .venv/bin/ansible-playbook playbooks/lab_teardown.yml"
