"""Continual pre-training of a larger model than the proxy on the math field with a Hugging Face
Trainer, its data mixture driven by a mixing policy through ``MixAgentCallback``.

    python examples/hf_trainer_cpt.py --policy runs/agent/default/rl          # the trained agent
    python examples/hf_trainer_cpt.py --policy uniform                        # a baseline, same length
    python examples/hf_trainer_cpt.py --base configs/base_model/8m.yaml       # the ~8M base (long pre-training)
    torchrun --nproc_per_node 2 examples/hf_trainer_cpt.py --steps 40         # DDP through accelerate
    python examples/hf_trainer_cpt.py --model gguf-smollm2          # SmolLM2-135M (GPU-scale; CUDA if present)

The base model is pre-trained on the source field (cached; ``configs/base_model/2m.yaml`` by default,
4x the proxy). The run reports the source- and target-field benchmark scores before and after, and the
balanced score the agent was trained to raise. ``--resume`` continues from the last Trainer checkpoint in
``--out`` (the mixing state is restored with it).
"""

from mixagent.deploy.cpt import main

if __name__ == "__main__":
    main()
