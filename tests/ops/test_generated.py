"""The committed instance files (csrc/instances/, the registry, stoicc_ext/instances.json) are
exactly what csrc/generate_instances.py writes: regenerated into a temporary directory and
compared file by file, so an edit of the generator without a rerun (or a hand edit of its
output) fails here."""
import filecmp
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generator():
    spec = importlib.util.spec_from_file_location("generate_instances", os.path.join(REPO, "csrc",
                                                                                      "generate_instances.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
