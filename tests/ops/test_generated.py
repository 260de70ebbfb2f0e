"""The committed generated files are exactly what their generators write: the instance files
(csrc/instances/, the registry, stoicc_ext/instances.json) of csrc/generate_instances.py,
regenerated into a temporary directory and compared file by file, and the wgmma wrappers
(csrc/kernels/wgmma_ops.cuh) of csrc/kernels/gen_wgmma_ops.py; so an edit of a generator without a
rerun (or a hand edit of its output) fails here."""
import filecmp
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(*path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(path[-1])[0], os.path.join(REPO, *path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def generator():
    return load("csrc", "generate_instances.py")


def test_committed_wgmma_wrappers_match_their_generator():
    with open(os.path.join(REPO, "csrc", "kernels", "wgmma_ops.cuh")) as f:
        assert f.read() == load("csrc", "kernels", "gen_wgmma_ops.py").source(), \
            "rerun python csrc/kernels/gen_wgmma_ops.py"


def test_committed_instances_match_the_generator(tmp_path):
    gen = generator()
    files = gen.outputs()
    gen.write(str(tmp_path), files)
    differ = [rel for rel in files if not filecmp.cmp(tmp_path / rel, os.path.join(REPO, rel), shallow=False)]
    assert differ == [], f"rerun python csrc/generate_instances.py: {differ} differ from its output"
    inst_dir = os.path.join("csrc", "instances")
    committed = set(os.listdir(os.path.join(REPO, inst_dir)))
    generated = set(os.listdir(tmp_path / inst_dir))
    assert committed == generated, (f"not generated: {sorted(committed - generated)}, "
                                    f"missing: {sorted(generated - committed)}")


def test_generator_names_spell_their_parameters():
    gen = generator()
    names = [x.name for x in gen.INSTANCES]
    assert len(set(names)) == len(names)
    x = gen.INSTANCES[0]
    assert x.name == (f"spmm_m{x.block_m}_n{x.block_n}_k{x.block_k}_w{x.warps_n}x{x.warps_m}_s{x.stages}_"
                      f"{gen.SHORT[x.schedule]}")
    assert x.family is gen.MMA and x.min_sm == 80
    assert f'#include "../kernels/{gen.MMA.header}"' in gen.instance_source(x)
