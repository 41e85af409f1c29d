import torch, pydg
from cuda.bindings import driver as cu
from pydg.arrays import array_info
from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands
from pydg.scheduler.heuristics import choose_plan
from dataclasses import replace
m,n,k=4096,7168,2048
a=torch.empty(m,k,dtype=torch.uint8,device='cuda'); sa=torch.empty(k//128,m,device='cuda').T; b=torch.empty(n,k,dtype=torch.uint8,device='cuda'); sb=torch.empty(n//128,k//128,device='cuda'); out=torch.empty(m,n,dtype=torch.bfloat16,device='cuda')
ops=GemmOperands(*(array_info(x,'x') for x in (a,sa,b,sb,out)))
for bn, stages in ((176,4),(128,5),(16,8)):
    plan=replace(choose_plan('dense',m,n,k,1,132), block_n=bn, num_stages=stages)
    plan = replace(plan, block_m=64) if bn == 16 else plan
    l=GemmLauncher(plan,ops,0)
    print(bn, plan.smem_bytes, cu.cuOccupancyMaxActiveClusters(l.func if hasattr(l,'func') else l.launch.func, l.launch.config))
