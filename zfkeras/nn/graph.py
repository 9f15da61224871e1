"""The layer calls of a Keras model, from its one image input: the walk every projection uses.

A model is read as a graph of layer calls (:class:`Graph`): a chain (ZFNet) or any DAG with merges
(ResNet's Add, DenseNet's and Inception's Concatenate) and tensors used by several layers. The
deconvnet (:mod:`zfkeras.nn.deconv`), receptive fields and windows (:mod:`zfkeras.nn.fields`) and
occlusion walk it, so chains and DAGs share one code path.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One call of a layer in a model's graph.

    Attributes:
        layer: the Keras layer (or operation) called.
        inputs: keys (:attr:`Graph.shapes`) of its input tensors, in call order (a merge's list).
        outputs: keys of its output tensors (SwitchMaxPool: pooled, switches).
        call: the Keras node, whose arguments rebuild the call (:meth:`Graph.apply`).
    """

    layer: object
    inputs: tuple
    outputs: tuple
    call: object


def _producer(tensor):
    operation, index, _ = tensor._keras_history
    return operation._inbound_nodes[index]


class Graph:
    """The layer calls of a Keras model (Sequential or Functional), from its one image input.

    Attributes:
        model: the model.
        input: key of the image input tensor.
        nodes: every :class:`Node` but the input, in topological order (each after its inputs;
            for a chain, the model's layer order).
        shapes: ``{key: shape without the batch axis}`` of every tensor.
        producer: ``{key: Node}`` of every tensor but the input.
    """

    def __init__(self, model):
        if len(model.inputs) != 1:
            raise ValueError(f"the model needs one image input; {model.name!r} has {len(model.inputs)}")
        self.model = model
        self.input = id(model.inputs[0])
        self._tensors = {self.input: model.inputs[0]}  # keeps the keys (ids) alive and unique
        outputs = keras.tree.flatten(model.outputs)
        order, done, stack = [], set(), [_producer(t) for t in outputs]
        while stack:  # iterative depth-first post-order (DenseNet's chains are deeper than Python's recursion)
            call = stack[-1]
            if id(call) in done:
                stack.pop()
                continue
            waiting = [_producer(t) for t in call.input_tensors if id(_producer(t)) not in done]
            if waiting:
                stack.extend(reversed(waiting))  # first input first: layers in call order
                continue
            stack.pop()
            done.add(id(call))
            order.append(call)
        self.nodes, self.producer = [], {}
        for call in order:
            for tensor in list(call.input_tensors) + list(call.output_tensors):
                self._tensors[id(tensor)] = tensor
            if isinstance(call.operation, keras.layers.InputLayer):
                if id(call.output_tensors[0]) != self.input:
                    raise ValueError(f"the model needs one image input; {model.name!r} has another input {call.operation.name!r}")
                continue
            node = Node(call.operation, tuple(map(id, call.input_tensors)), tuple(map(id, call.output_tensors)), call)
            self.nodes.append(node)
            self.producer.update({key: node for key in node.outputs})
        self.shapes = {key: tuple(tensor.shape[1:]) for key, tensor in self._tensors.items()}

    def key(self, layer):
        """Key of ``layer``'s (first) output tensor."""
        output = layer.output
        return id(output[0] if isinstance(output, (list, tuple)) else output)

    def below(self, keys):
        """The nodes needed to compute the tensors ``keys``, in topological order."""
        needed, nodes = set(keys), []
        for node in reversed(self.nodes):
            if needed.intersection(node.outputs):
                nodes.append(node)
                needed.update(node.inputs)
        return nodes[::-1]

    def consumers(self, nodes=None):
        """``{key: [Node]}``: which of ``nodes`` (default all) read each tensor."""
        readers = {}
        for node in self.nodes if nodes is None else nodes:
            for key in node.inputs:
                readers.setdefault(key, []).append(node)
        return readers

    def apply(self, node, values):
        """Call ``node``'s layer at inference on tensors ``values`` ``{key: tensor}``."""
        args, kwargs = node.call.arguments.fill_in(values)
        return node.layer(*args, **kwargs)

    def chain(self, what="this"):
        """The layers in order if the model is a single chain, else a ValueError naming the first
        layer that does not take the output of the layer before it."""
        previous = self.input
        for node in self.nodes:
            if node.inputs != (previous,):
                raise ValueError(f"{what} needs a chain of layers; layer {node.layer.name!r} does not take the output of the layer before it")
            previous = node.outputs[0]
        return [node.layer for node in self.nodes]
