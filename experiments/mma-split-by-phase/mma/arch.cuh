// The one place where the target architecture picks its path of the mma.sync kernel. ptx.cuh
// defines STOICC_BULK_COPY in the sm_90 device pass only; the sm_80/86/89 passes and the host
// pass take the cp.async path.
#pragma once
#include "config.cuh"
#include "loads_sm80.cuh"
#include "loads_sm90.cuh"
#include "reduce_sm90.cuh"

namespace stoicc {

// Before sm_90 there are no clusters: split-K rows are reduced through the workspace (reduce.cuh).
template <class C>
struct NoClusterReduce {
  static constexpr bool kEnabled = false;
};

#ifdef STOICC_BULK_COPY
template <class C> using MmaLoads = LoadsSm90<C>;            // bulk / TMA copies on mbarriers, PDL
template <class C> using SplitKCluster = ClusterReduce<C>;   // split-K reduced in the cluster
#else
template <class C> using MmaLoads = LoadsSm80<C>;            // cp.async
template <class C> using SplitKCluster = NoClusterReduce<C>;
#endif

}  // namespace stoicc
