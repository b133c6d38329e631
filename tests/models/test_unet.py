from __future__ import annotations

import pytest
import torch

from idl.models import MCDropout, UNet2D, UNetSpec, set_mc_dropout


@pytest.mark.parametrize("shape", [(1, 1, 37, 50), (2, 1, 16, 16), (1, 1, 5, 9)])
def test_any_input_size_gives_same_size_output(shape: tuple[int, ...]) -> None:
    net = UNet2D(UNetSpec(depth=3, base_filters=4)).eval()
    with torch.no_grad():
        assert net(torch.rand(shape)).shape == (shape[0], 1, *shape[2:])


def test_padding_is_cropped_back_exactly() -> None:
    torch.manual_seed(0)
    net = UNet2D(UNetSpec(depth=2, base_filters=4, dropout=0.0)).eval()
    x = torch.rand(1, 1, 30, 30)
    padded = torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_aligned(padded)[..., :30, :30])


def test_multichannel_multiclass_shapes() -> None:
    net = UNet2D(UNetSpec(in_channels=3, out_channels=4, depth=2, base_filters=4)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 48)).shape == (2, 4, 32, 48)


def test_dropout_after_each_encoder_level_and_bottleneck() -> None:
    net = UNet2D(UNetSpec(depth=4, dropout=0.2))
    drops = [m for m in net.modules() if isinstance(m, MCDropout)]
    assert len(drops) == 5 and all(d.p == 0.2 for d in drops)
    assert all(isinstance(level.drop, MCDropout) for level in (*net.encoder, net.bottleneck))
    last = UNet2D(UNetSpec(depth=4, dropout=0.2, dropout_at="last"))
    drops = [m for m in last.modules() if isinstance(m, MCDropout)]
    assert drops == [last.last_drop] and last.last_drop.p == 0.2
    assert last.state_dict().keys() == net.state_dict().keys()  # the same weights, dropout elsewhere
    decoder = UNet2D(UNetSpec(depth=4, dropout=0.2, dropout_at="decoder"))
    drops = [m for m in decoder.modules() if isinstance(m, MCDropout)]
    assert drops == [decoder.bottleneck.drop, *(level.drop for level in decoder.decoder)]
    assert decoder.state_dict().keys() == net.state_dict().keys()


@pytest.mark.parametrize("place", ["encoder", "decoder", "last"])
def test_samples_fan_out_at_the_first_dropout(place: str, randomized_norms) -> None:
    """forward_samples: S samples per input, each its own dropout mask; without Monte Carlo mode every
    sample equals the deterministic output (decoder dropout splits the decoder's first convolutions
    into a per-sample and a shared part: equal up to float rounding); the mean of many samples is near
    it."""
    torch.manual_seed(0)
    net = randomized_norms(UNet2D(UNetSpec(depth=2, base_filters=4, dropout_at=place))).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        det = net.forward_aligned(x)
        same = net.forward_samples(x, torch.zeros(3)).view(2, 3, 1, 32, 32)
        assert torch.allclose(same, det[:, None].expand_as(same), atol=1e-6, rtol=0)
        assert place == "decoder" or torch.equal(same, det[:, None].expand_as(same))
        set_mc_dropout(net, True)
        samples = net.forward_samples(x, torch.zeros(64)).view(2, 64, 1, 32, 32)
    assert (samples[:, 0] - samples[:, 1]).abs().max() > 1e-3  # the samples differ
    assert (samples[0, 0] - samples[1, 0]).abs().max() > 1e-3  # tile by tile
    assert (samples.mean(dim=1) - det).abs().mean() < 0.3 * (samples - det[:, None]).abs().mean()


def test_mc_dropout_is_stochastic_only_when_switched_on() -> None:
    torch.manual_seed(0)
    net = UNet2D(UNetSpec(depth=2, base_filters=4)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        assert set_mc_dropout(net, True) == 3
        a, b = net(x), net(x)
    assert (a - b).abs().mean() > 1e-4


def test_invalid_dropout() -> None:
    with pytest.raises(ValueError, match="dropout probability"):
        MCDropout(1.0)
