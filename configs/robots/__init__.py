"""Robot configs (``get_config()`` files): the real UR5e (``ur5e.py``) and its MuJoCo twin
(``ur5e_sim.py``). Load one with ``ml_collections.config_flags`` (``--robot=configs/robots/ur5e.py``)
or ``configs.robots.ur5e.get_config()``."""
