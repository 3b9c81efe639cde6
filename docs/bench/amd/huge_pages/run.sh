cd /work/main
for i in 1 2; do
  for mode in off on; do
    if [ $mode = on ]; then export GLIBC_TUNABLES=glibc.malloc.hugetlb=1; else unset GLIBC_TUNABLES; fi
    .venv/bin/hybridpo bench speed --steps 5 --repeats 1 --workload smollm2-hypo --variants "hybridpo dpo" --out docs/bench/amd/huge_pages/thp_${mode}_$i > docs/bench/amd/huge_pages/thp_${mode}_$i.log 2>&1
  done
done
